//! The crate's layering, checked from the source: every `crate::`, `super::` and `self::`
//! path in `src/` (`use` lines and inline paths alike, test modules included; comments and
//! string literals skipped) against the layer list in `src/lib.rs`.
//!
//! - A module imports only from the layers below it: no upward import, no import within its
//!   own layer, hence no circle between modules. A path through a re-export of the crate root
//!   (`crate::Lifecycle`) counts as an import of the module it re-exports.
//! - Within a folder module (`src/metrics/`), no two files import each other, directly or
//!   round a longer circle (a child and its `mod.rs` are not counted: `mod.rs` declares and
//!   re-exports its children).
//! - Every module in `src/` is in the list once, and the README's Layout lists the same
//!   modules in the same layers, so that it cannot drift.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// File-level circles known when this check was written, to be removed by other work: a
/// circle containing every file of an entry is tolerated, and each entry must still be in a
/// circle (delete it once it is gone).
const KNOWN_CIRCLES: &[&[&str]] = &[];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The layers declared in `src/lib.rs`, bottom first: the indented lines after
/// `// Layers, top to bottom`, each a comma-separated list of module names.
fn declared_layers(lib: &str) -> Vec<Vec<String>> {
    let mut lines = lib
        .lines()
        .skip_while(|l| !l.starts_with("// Layers, top to bottom"));
    assert!(
        lines.next().is_some(),
        "src/lib.rs has no `// Layers, top to bottom` list"
    );
    let mut layers: Vec<Vec<String>> = lines
        .skip_while(|l| !l.starts_with("//   "))
        .take_while(|l| l.starts_with("//   "))
        .map(|l| {
            l.trim_start_matches("//")
                .split(',')
                .map(|m| m.trim().to_owned())
                .filter(|m| !m.is_empty())
                .collect()
        })
        .collect();
    layers.reverse();
    layers
}

/// The README's Layout block: the `text` block after "modules form layers", one layer a
/// line, top first, each line starting with its files (`name.rs` or `name/`).
fn readme_layers(readme: &str) -> Option<Vec<Vec<String>>> {
    let start = readme.find("modules form layers")?;
    let block = &readme[start..];
    let block = &block[block.find("```text")? + "```text".len()..];
    let block = &block[..block.find("```")?];
    let mut layers: Vec<Vec<String>> = block
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.split_whitespace()
                .take_while(|w| w.ends_with(".rs") || w.ends_with('/'))
                .map(|w| w.trim_end_matches('/').trim_end_matches(".rs").to_owned())
                .collect()
        })
        .collect();
    layers.reverse();
    Some(layers)
}

/// `text` with comments and the contents of string and character literals blanked out.
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c == b'r'
            && (b.get(i + 1) == Some(&b'"') || b.get(i + 1) == Some(&b'#'))
            && (i == 0 || !is_ident(b[i - 1]))
        {
            // A raw string: r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push('r');
                i += 1;
                continue;
            }
            j += 1;
            let close: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            while j < b.len() && !b[j..].starts_with(&close) {
                j += 1;
            }
            i = j + close.len();
            out.push_str("\"\"");
        } else if c == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == b'\'' {
            // A character literal ('x', '\n', '\u{..}'), or a lifetime ('a).
            if b.get(i + 1) == Some(&b'\\') {
                let mut j = i + 2;
                while j < b.len() && b[j] != b'\'' {
                    j += 1;
                }
                i = j + 1;
                out.push_str("' '");
            } else if b.get(i + 2) == Some(&b'\'') {
                i += 3;
                out.push_str("' '");
            } else {
                out.push('\'');
                i += 1;
            }
        } else {
            let ch = text[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// The paths of a path tree at `code[i..]` (after `crate::`): `a::b`, `a::{b, c::d}`, `*`.
fn path_tree(code: &[u8], mut i: usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let skip_ws = |mut i: usize| {
        while i < code.len() && code[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let mut path = prefix;
    loop {
        i = skip_ws(i);
        if code.get(i) == Some(&b'{') {
            i += 1;
            loop {
                i = skip_ws(i);
                match code.get(i) {
                    Some(b'}') => return i + 1,
                    Some(b',') => i += 1,
                    None => return i,
                    _ => i = path_tree(code, i, path.clone(), out),
                }
            }
        }
        let start = i;
        while i < code.len() && is_ident(code[i]) {
            i += 1;
        }
        if start == i {
            // `*`, or the end of the path.
            if code.get(i) == Some(&b'*') {
                i += 1;
            }
            out.push(path);
            return i;
        }
        path.push(String::from_utf8_lossy(&code[start..i]).into_owned());
        let j = skip_ws(i);
        if code[j..].starts_with(b"::") {
            i = j + 2;
        } else {
            out.push(path);
            return i;
        }
    }
}

/// Every path under `root` (`crate`, `super` or `self`) in `code`, without the root.
fn paths(code: &str, root: &str) -> Vec<Vec<String>> {
    let b = code.as_bytes();
    let pat = format!("{root}::");
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = code[from..].find(&pat) {
        let at = from + at;
        from = at + pat.len();
        if at > 0 && (is_ident(b[at - 1]) || b[at - 1] == b':') {
            continue; // `super::super::x`, `foo_crate::x`: not a root here
        }
        path_tree(b, from, Vec::new(), &mut out);
    }
    out.retain(|p| !p.is_empty());
    out
}

/// One source file: its top-level module, its file key (`metrics/layer`; `metrics` for
/// `mod.rs`), and its code.
struct File {
    module: String,
    key: String,
    sibling: Option<String>,
    code: String,
}

fn files(dir: &Path, rel: &str, out: &mut Vec<File>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let rel_path = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        if path.is_dir() {
            files(&path, &rel_path, out);
            continue;
        }
        let Some(stem) = rel_path.strip_suffix(".rs") else {
            continue;
        };
        if stem == "lib" {
            continue;
        }
        let parts: Vec<&str> = stem.split('/').collect();
        let module = parts[0].to_owned();
        let (key, sibling) = match parts.as_slice() {
            [_] | [_, "mod"] => (module.clone(), None),
            [_, file] => (stem.to_owned(), Some((*file).to_owned())),
            _ => (stem.to_owned(), None),
        };
        let code = code_only(&fs::read_to_string(&path).unwrap());
        out.push(File {
            module,
            key,
            sibling,
            code,
        });
    }
}

/// The crate root's re-exports: item name -> module (`Lifecycle` -> `lifecycle`).
fn reexports(lib: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for p in paths(
        &code_only(lib).replace("pub use ", "pub use crate::"),
        "crate",
    ) {
        if p.len() >= 2 {
            map.insert(p.last().unwrap().clone(), p[0].clone());
        }
    }
    map
}

/// Strongly connected components with more than one node.
fn circles(edges: &BTreeSet<(String, String)>) -> Vec<Vec<String>> {
    let nodes: BTreeSet<&String> = edges.iter().flat_map(|(a, b)| [a, b]).collect();
    let reach = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(n) = stack.pop() {
            for (a, b) in edges {
                if *a == n && seen.insert(b.clone()) {
                    stack.push(b.clone());
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&String, BTreeSet<String>> =
        nodes.iter().map(|n| (*n, reach(n))).collect();
    let mut out: BTreeSet<Vec<String>> = BTreeSet::new();
    for n in &nodes {
        let scc: Vec<String> = nodes
            .iter()
            .filter(|m| reachable[*n].contains(**m) && reachable[*m].contains(*n))
            .map(|m| (*m).clone())
            .collect();
        if scc.len() > 1 {
            out.insert(scc);
        }
    }
    out.into_iter().collect()
}

#[test]
fn modules_import_only_from_the_layers_below_and_no_file_circles() {
    let lib = fs::read_to_string(src().join("lib.rs")).unwrap();
    let layers = declared_layers(&lib);
    let mut layer_of: BTreeMap<String, usize> = BTreeMap::new();
    let mut problems = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        for m in layer {
            if layer_of.insert(m.clone(), i).is_some() {
                problems.push(format!("`{m}` is listed twice in src/lib.rs's layers"));
            }
        }
    }
    let reexported = reexports(&lib);
    let mut all = Vec::new();
    files(&src(), "", &mut all);
    let modules: BTreeSet<String> = all.iter().map(|f| f.module.clone()).collect();
    for m in &modules {
        if !layer_of.contains_key(m) {
            problems.push(format!("src/{m} is not in src/lib.rs's layer list"));
        }
    }
    for m in layer_of.keys() {
        if !modules.contains(m) {
            problems.push(format!(
                "`{m}` is in src/lib.rs's layer list but not in src/"
            ));
        }
    }

    // Module level: each import goes down at least one layer.
    let mut module_edges = BTreeSet::new();
    let mut file_edges = BTreeSet::new();
    for f in &all {
        for p in paths(&f.code, "crate") {
            let to = if modules.contains(&p[0]) {
                p[0].clone()
            } else if let Some(m) = reexported.get(&p[0]) {
                m.clone()
            } else {
                continue; // a macro or an item of the crate root itself
            };
            if to == f.module {
                if let (Some(_), Some(next)) = (&f.sibling, p.get(1)) {
                    file_edges.insert((f.key.clone(), format!("{to}/{next}")));
                }
                continue;
            }
            module_edges.insert((f.module.clone(), to));
        }
        if f.sibling.is_some() {
            for p in paths(&f.code, "super") {
                file_edges.insert((f.key.clone(), format!("{}/{}", f.module, p[0])));
            }
        }
    }
    let file_keys: BTreeSet<&String> = all.iter().map(|f| &f.key).collect();
    file_edges.retain(|(a, b)| a != b && file_keys.contains(b));
    for (from, to) in &module_edges {
        let (Some(&lf), Some(&lt)) = (layer_of.get(from), layer_of.get(to)) else {
            continue;
        };
        if lt > lf {
            problems.push(format!(
                "upward import: {from} (layer {lf}) imports {to} (layer {lt})"
            ));
        } else if lt == lf {
            problems.push(format!(
                "import within a layer: {from} imports {to} (layer {lf})"
            ));
        }
    }
    for c in circles(&module_edges) {
        problems.push(format!("module circle: {}", c.join(" <-> ")));
    }
    let found = circles(&file_edges);
    for c in &found {
        if !KNOWN_CIRCLES
            .iter()
            .any(|k| k.iter().all(|f| c.iter().any(|g| g == f)))
        {
            problems.push(format!("file circle: {}", c.join(" <-> ")));
        }
    }
    for k in KNOWN_CIRCLES {
        if !found
            .iter()
            .any(|c| k.iter().all(|f| c.iter().any(|g| g == f)))
        {
            problems.push(format!(
                "{} is no longer a circle: delete it from KNOWN_CIRCLES in tests/layering.rs",
                k.join(" <-> ")
            ));
        }
    }
    println!(
        "{} modules in {} layers, {} module imports, {} file imports inside folders, {} file circle(s) ({} known)",
        modules.len(),
        layers.len(),
        module_edges.len(),
        file_edges.len(),
        found.len(),
        KNOWN_CIRCLES.len()
    );
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn the_readme_layout_lists_the_same_layers_as_lib_rs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = fs::read_to_string(src().join("lib.rs")).unwrap();
    let declared = declared_layers(&lib);
    // The README, or the guide the Layout section moved to.
    let mut candidates = vec![root.join("README.md")];
    if let Ok(docs) = fs::read_dir(root.join("docs")) {
        let mut docs: Vec<PathBuf> = docs.map(|e| e.unwrap().path()).collect();
        docs.sort();
        candidates.extend(
            docs.into_iter()
                .filter(|p| p.extension().is_some_and(|e| e == "md")),
        );
    }
    let (file, documented) = candidates
        .iter()
        .find_map(|p| Some((p, readme_layers(&fs::read_to_string(p).ok()?)?)))
        .expect("no Layout block (\"modules form layers\" and a text block) in README.md or docs/");
    let sorted = |layers: &[Vec<String>]| -> Vec<BTreeSet<String>> {
        layers.iter().map(|l| l.iter().cloned().collect()).collect()
    };
    assert_eq!(
        sorted(&documented),
        sorted(&declared),
        "{}'s Layout (bottom layer first) differs from src/lib.rs's layer list",
        file.display()
    );
}

#[test]
fn the_parser_sees_paths_in_code_and_not_in_comments_or_strings() {
    let code = code_only(
        "use crate::{a::B, c, d::{e, f::G}};\n// crate::h\nlet s = \"crate::i\";\n\
         crate::j::k(); /* crate::l */ let c = '\"'; crate::m::N\n",
    );
    let found: Vec<String> = paths(&code, "crate").iter().map(|p| p.join("::")).collect();
    assert_eq!(found, ["a::B", "c", "d::e", "d::f::G", "j::k", "m::N"]);
}
