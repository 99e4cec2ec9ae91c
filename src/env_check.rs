//! Mistyped `PODCYCLE_*` variables: named at startup with the closest known one, instead of
//! being silently ignored (`PODCYCLE_DRAIN_TIMOUT` → did you mean `PODCYCLE_DRAIN_TIMEOUT`).

use crate::config::VARS;

/// Every variable [`Config::from_env`](crate::Config::from_env) reads, and the ones podcycle's
/// own tools read (never typos).
fn known() -> impl Iterator<Item = &'static str> {
    VARS.iter().map(|v| v.name).chain(OTHERS.iter().copied())
}

/// The `PODCYCLE_*` names podcycle does not read as settings but knows are no typos. The
/// settings themselves are the table of variables ([`VARS`]).
const OTHERS: &[&str] = &[
    // podcycle-judge's own, read by its command line (`podcycle-judge serve` runs under
    // podcycle, so they are in the environment podcycle checks).
    "PODCYCLE_JUDGE_CA_FILE",
    "PODCYCLE_JUDGE_BEARER_TOKEN_FILE",
    "PODCYCLE_JUDGE_BASIC_AUTH_USER",
    "PODCYCLE_JUDGE_BASIC_AUTH_PASSWORD_FILE",
    "PODCYCLE_JUDGE_API_TOKEN_FILE",
    // Test tooling, not settings.
    "PODCYCLE_TEST_CHILD",
    "PODCYCLE_SKIP_MISSING_TOOLS",
];

/// The `PODCYCLE_*` names in `names` that podcycle does not read, each with the closest known
/// name when one is near enough to be a typo.
pub(crate) fn unknown<'a>(
    names: impl IntoIterator<Item = &'a str>,
) -> Vec<(&'a str, Option<&'static str>)> {
    names
        .into_iter()
        .filter(|n| n.starts_with("PODCYCLE_") && !known().any(|k| k == *n))
        .map(|n| (n, closest(n)))
        .collect()
}

/// The known name at the smallest edit distance from `name`, if within a third of its length.
fn closest(name: &str) -> Option<&'static str> {
    let (best, distance) = known()
        .map(|k| (k, edit_distance(name, k)))
        .min_by_key(|(_, d)| *d)?;
    (distance <= name.len() / 3).then_some(best)
}

/// Levenshtein distance (insertions, deletions, substitutions), on bytes: the names are ASCII.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// Logs one warning per unknown `PODCYCLE_*` variable in the environment.
pub(crate) fn warn_unknown_env() {
    let names: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .collect();
    for (name, suggestion) in unknown(names.iter().map(String::as_str)) {
        crate::stderr::unless_subscribed(|| match suggestion {
            Some(known) => {
                format!("warning: unknown variable {name} ignored: did you mean {known}?")
            }
            None => format!(
                "warning: unknown variable {name} ignored (see Config::from_env for the list)"
            ),
        });
        match suggestion {
            Some(known) => tracing::warn!(
                variable = %name,
                "unknown podcycle variable, ignored: did you mean {known}?"
            ),
            None => tracing::warn!(
                variable = %name,
                "unknown podcycle variable, ignored (see Config::from_env for the list)"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("TIMOUT", "TIMEOUT"), 1);
        assert_eq!(edit_distance("same", "same"), 0);
    }

    #[test]
    fn typos_get_the_closest_known_name() {
        let found = unknown([
            "PODCYCLE_DRAIN_TIMOUT",
            "PODCYCLE_SHUTDOWN_DELAY",
            "PODCYCLE_ADMIN_ADRR",
            "PODCYCLE_SOMETHING_ELSE_ENTIRELY",
            "HOME",
        ]);
        assert_eq!(
            found,
            vec![
                ("PODCYCLE_DRAIN_TIMOUT", Some("PODCYCLE_DRAIN_TIMEOUT")),
                ("PODCYCLE_ADMIN_ADRR", Some("PODCYCLE_ADMIN_ADDR")),
                ("PODCYCLE_SOMETHING_ELSE_ENTIRELY", None),
            ]
        );
    }

    #[test]
    fn every_variable_the_config_reads_is_known() {
        let src = [
            include_str!("config/mod.rs"),
            include_str!("config/error.rs"),
            include_str!("config/plan.rs"),
            include_str!("config/validate.rs"),
            include_str!("config/vars.rs"),
        ]
        .concat();
        let mut rest = src.as_str();
        while let Some(at) = rest.find("\"PODCYCLE_") {
            let name = &rest[at + 1..];
            let end = name
                .find(|c: char| !(c.is_ascii_uppercase() || c == '_'))
                .unwrap_or(name.len());
            let name = name[..end].trim_end_matches('_');
            assert!(
                known().any(|k| k == name),
                "{name} missing from the table of variables (config::VARS)"
            );
            rest = &rest[at + 1..];
        }
    }
}
