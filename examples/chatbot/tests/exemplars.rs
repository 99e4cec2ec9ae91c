//! Exemplars end to end: the real `chatbot` binary answers a question sent with a known,
//! sampled `traceparent`; a real Prometheus (Debian's, `--enable-feature=exemplar-storage`)
//! scrapes its admin listener (asking for OpenMetrics, as it does by default); its
//! `/api/v1/query_exemplars` then returns that trace id on the request-duration histogram,
//! with the `version` label.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use podcycle_test_support::{self as support, prometheus::Prometheus, Child, SOON};

const CHATBOT: &str = env!("CARGO_BIN_EXE_chatbot");

/// One HTTP/1.1 request (`connection: close`): the status and the body (chunked or not).
fn request(addr: SocketAddr, head: &str, body: &str) -> (u16, String) {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(SOON)).unwrap();
    write!(
        conn,
        "{head}\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    conn.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut data = String::new();
        let mut rest = body;
        loop {
            let (size, tail) = rest.split_once("\r\n").unwrap();
            let size = usize::from_str_radix(size.trim(), 16).unwrap();
            if size == 0 {
                break data;
            }
            data.push_str(&tail[..size]);
            rest = &tail[size + 2..];
        }
    } else {
        body.to_owned()
    };
    (status, body)
}

#[test]
fn prometheus_stores_the_exemplar_of_a_sampled_request_with_its_version() {
    let Some(bin) = support::tool("prometheus") else {
        return;
    };
    let (app, admin) = (support::free_port(), support::free_port());
    let (app_addr, admin_addr) = (format!("127.0.0.1:{app}"), format!("127.0.0.1:{admin}"));
    let _child = Child::spawn_binary(
        CHATBOT,
        &[
            ("PODCYCLE_ADDR", app_addr.as_str()),
            ("PODCYCLE_ADMIN_ADDR", admin_addr.as_str()),
            ("APP_VERSION", "7.7.7-exemplar"),
            ("CHATBOT_WARMUP_DELAY", "100ms"),
            ("CHATBOT_TOKEN_DELAY", "0ms"),
            ("PODCYCLE_SHUTDOWN_DELAY", "0s"),
            ("RUST_LOG", "warn"),
        ],
    );
    let (app, admin): (SocketAddr, SocketAddr) =
        (app_addr.parse().unwrap(), admin_addr.parse().unwrap());
    let deadline = Instant::now() + SOON * 3;
    while TcpStream::connect(admin).is_err() || request(admin, "GET /readyz HTTP/1.1", "").0 != 200
    {
        assert!(Instant::now() < deadline, "the chatbot never became ready");
        std::thread::sleep(Duration::from_millis(100));
    }

    let trace = "5e1f0c4a9b2d4e6f8a0b1c2d3e4f5a6b";
    let (status, _) = request(
        app,
        &format!(
            "POST /v1/chat HTTP/1.1\r\ncontent-type: application/json\r\ntraceparent: 00-{trace}-1a2b3c4d5e6f7a8b-01"
        ),
        r#"{"question":"how do I drain connections?"}"#,
    );
    assert_eq!(status, 200);

    let prom = Prometheus::start(
        &bin,
        "chatbot",
        &[admin],
        &["--enable-feature=exemplar-storage"],
    );
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let path = format!(
        "GET /api/v1/query_exemplars?query=http_server_request_duration_seconds_bucket&start={}&end={} HTTP/1.1",
        now - 600,
        now + 600
    );
    let deadline = Instant::now() + SOON * 6;
    let found = loop {
        if TcpStream::connect(prom.addr()).is_ok() {
            let (status, body) = request(prom.addr(), &path, "");
            if status == 200 && body.contains(trace) {
                break body;
            }
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never returned the exemplar of trace {trace}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let json: serde_json::Value = serde_json::from_str(&found).unwrap();
    let series = json["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| {
            s["exemplars"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["labels"]["trace_id"] == trace))
        })
        .unwrap_or_else(|| panic!("a series with the exemplar: {found}"));
    assert_eq!(
        series["seriesLabels"]["version"], "7.7.7-exemplar",
        "{found}"
    );
    assert_eq!(series["seriesLabels"]["http_route"], "/v1/chat", "{found}");
    assert_eq!(
        series["seriesLabels"]["__name__"],
        "http_server_request_duration_seconds_bucket"
    );
}
