//! The README's promises, run against the real `chatbot` binary in a child process: a bad
//! setting is one readable line and exit code 1; the drain walkthrough produces the stream
//! event and the log lines the README shows (read from README.md, so the two cannot drift); a
//! normal start and stop logs no warning.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use podcycle_test_support::{code, Child, SOON};

const CHATBOT: &str = env!("CARGO_BIN_EXE_chatbot");

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md")
}

/// The first fenced block after the line `<!-- walkthrough: {name} ... -->`.
fn walkthrough_block(readme: &str, name: &str) -> Vec<String> {
    let marker = format!("<!-- walkthrough: {name}");
    let at = readme
        .find(&marker)
        .unwrap_or_else(|| panic!("{marker} in README"));
    let rest = &readme[at..];
    let open = rest.find("```").expect("a fenced block after the marker");
    let body = &rest[open..];
    let body = &body[body.find('\n').unwrap() + 1..];
    let close = body.find("\n```").expect("the block's end");
    body[..close].lines().map(str::to_owned).collect()
}

/// A log line without its timestamp and with `elapsed=` values blanked (they vary by run).
fn normalised(line: &str) -> String {
    let line = line.trim();
    let line = match line.split_once(' ') {
        Some((first, rest)) if first.contains('T') && first.ends_with('Z') => rest.trim_start(),
        _ => line,
    };
    line.split(' ')
        .map(|word| {
            if word.starts_with("elapsed=") {
                "elapsed=_"
            } else if word.starts_with("took=") {
                "took=_"
            } else {
                word
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The address after `key=` in the first output line containing `marker`.
fn logged_addr(child: &mut Child, marker: &str) -> SocketAddr {
    let rest = child.wait_line(marker, SOON);
    let value = rest
        .split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .unwrap_or_else(|| panic!("addr= after {marker:?} in {rest:?}"));
    value.parse().unwrap()
}

#[test]
fn a_bad_setting_is_one_readable_line_and_exit_code_1() {
    let mut child = Child::spawn_binary(CHATBOT, &[("PODCYCLE_DRAIN_TIMEOUT", "20z")]);
    let (status, _) = child.wait_exit(SOON);
    let out = child.drain_output(Duration::from_secs(2));
    assert_eq!(code(status), 1, "{out}");
    let lines: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("PODCYCLE_DRAIN_TIMEOUT"))
        .collect();
    assert_eq!(lines.len(), 1, "one line names the variable:\n{out}");
    assert!(
        lines[0].contains(r#"invalid PODCYCLE_DRAIN_TIMEOUT="20z": expected a duration"#),
        "{out}"
    );
    for debug in ["InvalidEnv", "Config(", "var:"] {
        assert!(!out.contains(debug), "no Debug dump ({debug}):\n{out}");
    }
}

#[test]
fn a_bad_log_format_is_one_readable_line_and_exit_code_1() {
    let mut child = Child::spawn_binary(CHATBOT, &[("LOG_FORMAT", "xml")]);
    let (status, _) = child.wait_exit(SOON);
    let out = child.drain_output(Duration::from_secs(2));
    assert_eq!(code(status), 1, "{out}");
    assert!(
        out.contains(r#"invalid LOG_FORMAT="xml": expected `json` or `text`"#),
        "{out}"
    );
}

/// Reads the SSE response on `conn` until `until` holds for the text so far, or EOF.
fn read_until(conn: &mut TcpStream, text: &mut String, until: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + SOON;
    let mut buf = [0u8; 4096];
    while !until(text) {
        assert!(Instant::now() < deadline, "stream stalled:\n{text}");
        match conn.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e) => panic!("stream read failed: {e}\n{text}"),
        }
    }
}

#[test]
fn the_drain_walkthrough_shows_what_the_readme_shows() {
    let readme = readme();
    // The variables the README's run command sets, e.g. PODCYCLE_SHUTDOWN_DELAY=1s.
    let run = walkthrough_block(&readme, "run");
    let command = run
        .iter()
        .find(|l| l.contains("./target/release/chatbot"))
        .expect("the run line");
    let env: Vec<(&str, &str)> = command
        .split_whitespace()
        .map_while(|w| w.split_once('='))
        .collect();
    assert!(
        env.contains(&("PODCYCLE_SHUTDOWN_DELAY", "1s")),
        "the walkthrough states its delay: {command}"
    );
    let question = run
        .iter()
        .find_map(|l| {
            let at = l.find("/v1/chat/stream?")?;
            Some(l[at..].split('\'').next().unwrap().to_owned())
        })
        .expect("the curl line");

    let mut child = Child::spawn_binary(CHATBOT, &env);
    let app = logged_addr(&mut child, "application listener bound");
    // Until the warm-ups end the listener answers 503 at once: ask once it serves.
    child.wait_line("phase=\"serving\"", SOON);

    let mut conn = TcpStream::connect(app).unwrap();
    conn.set_read_timeout(Some(SOON)).unwrap();
    write!(
        conn,
        "GET {question} HTTP/1.1\r\nhost: {app}\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut stream = String::new();
    read_until(&mut conn, &mut stream, |t| t.contains("data: "));
    child.signal("TERM");
    read_until(&mut conn, &mut stream, |_| false);
    let (status, _) = child.wait_exit(SOON);
    let log = child.drain_output(Duration::from_secs(2));
    assert_eq!(code(status), 0, "{log}");

    // The stream's last event, as the README shows it.
    let expected_event = walkthrough_block(&readme, "stream").join("\n");
    let last = stream.rfind("event: ").expect("an event in the stream");
    assert!(
        stream[last..].starts_with(&expected_event),
        "last event:\n{}\nREADME:\n{expected_event}",
        &stream[last..]
    );

    // Every README line is in the log; every log line from the signal on is in the README;
    // the phase lines come in the README's order.
    let shown: Vec<String> = walkthrough_block(&readme, "log")
        .iter()
        .map(|l| normalised(l))
        .collect();
    // From the signal on: after the `serving` phase line (the serve task may log "keeping
    // serving" before the signal thread logs `deregistering`); check transitions are not part
    // of the walkthrough.
    let logged: Vec<String> = log
        .lines()
        .map(normalised)
        .skip_while(|l| !l.contains("phase=\"serving\""))
        .skip(1)
        .filter(|l| !l.contains(" podcycle::checks: "))
        .collect();
    for line in &shown {
        assert!(
            logged.contains(line),
            "README line not logged: {line}\nlog:\n{log}"
        );
    }
    for line in &logged {
        assert!(
            shown.contains(line),
            "logged line not in the README: {line}\nlog:\n{log}"
        );
    }
    let phases = |lines: &[String]| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l.contains("podcycle phase"))
            .cloned()
            .collect()
    };
    assert_eq!(phases(&logged), phases(&shown));

    // A normal start and stop warns about nothing.
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(warnings.is_empty(), "warnings on a normal run:\n{log}");
}

#[test]
fn a_mistyped_variable_is_named_with_the_closest_known_one() {
    let mut child = Child::spawn_binary(CHATBOT, &[("PODCYCLE_DRAIN_TIMOUT", "5s")]);
    let line = child.wait_line("unknown podcycle variable", SOON);
    assert!(
        line.contains("did you mean PODCYCLE_DRAIN_TIMEOUT?")
            && line.contains("variable=PODCYCLE_DRAIN_TIMOUT"),
        "{line}"
    );
    // SIGTERM only once the signal handler is surely installed (it is before the listener
    // binds): sent earlier, the default action kills the process.
    child.wait_line("application listener bound", SOON);
    child.signal("TERM");
    let (status, _) = child.wait_exit(SOON);
    assert_eq!(code(status), 0);
}
