//! The chatbot's gRPC service under `lifecycle.serve`, in a child process, called with
//! tonic's client over HTTP/2 cleartext: unary and server-streaming answers, gRPC errors for
//! bad input, gRPC status and method in the metrics, and SIGTERM in the middle of a stream
//! (readiness off, RPCs still answered during the delay, the stream ends with its last
//! message and OK, exit 0).

use podcycle_test_support as support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chatbot::grpc::pb::chatbot_client::ChatbotClient;
use chatbot::grpc::pb::{AskReply, AskRequest};
use support::{client, code, Child, SOON};
use tonic::transport::Channel;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

support::child!(
    "the chatbot, run by the other tests in a child process",
    support::child::serve(|| chatbot::run(chatbot::Mode::Podcycle))
);

struct Chatbot {
    child: Child,
    app: SocketAddr,
    admin: SocketAddr,
}

fn chatbot(env: &[(&str, &str)]) -> Chatbot {
    let app: SocketAddr = format!("127.0.0.1:{}", support::free_port())
        .parse()
        .unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", support::free_port())
        .parse()
        .unwrap();
    let (app_s, admin_s) = (app.to_string(), admin.to_string());
    let mut all = vec![
        ("PODCYCLE_ADDR", app_s.as_str()),
        ("PODCYCLE_ADMIN_ADDR", admin_s.as_str()),
        ("CHATBOT_WARMUP_DELAY", "0s"),
        ("CHATBOT_TOKEN_DELAY", "0ms"),
        ("RUST_LOG", "info"),
    ];
    all.extend_from_slice(env);
    Chatbot {
        child: Child::spawn(&all),
        app,
        admin,
    }
}

async fn wait_ready(admin: SocketAddr) {
    let deadline = Instant::now() + SOON * 3;
    loop {
        if let Ok(r) = client::get(admin, "/readyz").await {
            if r.status == 200 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "the chatbot never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn ask(question: &str) -> AskRequest {
    AskRequest {
        question: question.into(),
    }
}

/// Calls `path` with an `AskRequest`, whatever the service: for methods the chatbot lacks.
async fn call_path(channel: Channel, path: &'static str) -> Result<AskReply, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<AskRequest, AskReply>::default();
    grpc.unary(
        tonic::Request::new(ask("hello")),
        http::uri::PathAndQuery::from_static(path),
        codec,
    )
    .await
    .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_and_streaming_answers_errors_and_metrics() {
    let bot = chatbot(&[("CHATBOT_MAX_BODY_BYTES", "1024")]);
    wait_ready(bot.admin).await;
    let ch = channel(bot.app).await;
    let mut chat = ChatbotClient::new(ch.clone());

    let reply = chat
        .ask(ask("How do I size terminationGracePeriodSeconds?"))
        .await
        .unwrap()
        .into_inner();
    assert!(!reply.answer.is_empty());
    assert!(!reply.sources.is_empty());
    assert_eq!(reply.version, "0.1.0");

    let mut stream = chat
        .ask_stream(ask("why do I get 502 during a deploy"))
        .await
        .unwrap()
        .into_inner();
    let mut tokens = String::new();
    let mut last = None;
    while let Some(chunk) = stream.message().await.unwrap() {
        assert!(last.is_none(), "nothing after the last message");
        if chunk.done {
            last = Some(chunk);
        } else {
            tokens.push_str(&chunk.token);
        }
    }
    let last = last.expect("a last message");
    assert!(!last.sources.is_empty() && !last.reconnect);
    assert!(!tokens.is_empty());

    // Bad input: gRPC errors, never a crash.
    let empty = chat.ask(ask("  ")).await.unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument, "{empty:?}");
    let big = chat.ask(ask(&"x".repeat(2000))).await.unwrap_err();
    assert_eq!(big.code(), Code::ResourceExhausted, "{big:?}");
    let nope = call_path(ch.clone(), "/chatbot.v1.Chatbot/Nope").await;
    assert_eq!(nope.unwrap_err().code(), Code::Unimplemented);
    let other = call_path(ch.clone(), "/other.v1.Service/Ask").await;
    assert_eq!(other.unwrap_err().code(), Code::Unimplemented);
    // HTTP still works beside gRPC on the same port.
    let http = client::get(bot.app, "/v1/chat/stream?question=exit+code+4").await;
    assert_eq!(http.unwrap().status, 200);

    let metrics = client::get(bot.admin, "/metrics").await.unwrap().body;
    let series = |needle: &str| {
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("http_server_request_duration_seconds_count") && l.contains(needle)
            })
            .collect::<Vec<_>>()
    };
    let ok = series("http_route=\"/chatbot.v1.Chatbot/Ask\"");
    assert!(ok.iter().any(|l| !l.contains("error_type")), "{metrics}");
    assert!(
        ok.iter()
            .any(|l| l.contains("error_type=\"INVALID_ARGUMENT\"")),
        "{metrics}"
    );
    assert!(
        ok.iter()
            .any(|l| l.contains("error_type=\"RESOURCE_EXHAUSTED\"")),
        "{metrics}"
    );
    assert!(
        !series("http_route=\"/chatbot.v1.Chatbot/AskStream\"").is_empty(),
        "{metrics}"
    );
    assert!(
        !metrics.contains("/chatbot.v1.Chatbot/Nope"),
        "unknown methods get no route"
    );
    assert!(
        series("http_route=\"/chatbot.v1.Chatbot/{*rest}\"")
            .iter()
            .any(|l| l.contains("error_type=\"UNIMPLEMENTED\"")),
        "{metrics}"
    );
    assert!(
        series("http_route=\"unmatched\"")
            .iter()
            .any(|l| l.contains("error_type=\"UNIMPLEMENTED\"")),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_faults_are_internal_errors_in_the_metrics() {
    let bot = chatbot(&[("CHATBOT_FAULT_ERROR_RATE", "1")]);
    wait_ready(bot.admin).await;
    let mut chat = ChatbotClient::new(channel(bot.app).await);
    let err = chat.ask(ask("hello")).await.unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    let err = chat.ask_stream(ask("hello")).await.unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    let metrics = client::get(bot.admin, "/metrics").await.unwrap().body;
    for method in ["Ask", "AskStream"] {
        let needle = format!(
            "http_route=\"/chatbot.v1.Chatbot/{method}\",http_response_status_code=\"200\",version=\"0.1.0\",error_type=\"INTERNAL\"}} 1"
        );
        assert!(
            metrics.lines().any(
                |l| l.starts_with("http_server_request_duration_seconds_count")
                    && l.contains(&needle)
            ),
            "{needle} in {metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_stream_the_stream_ends_with_its_last_message_and_ok() {
    let mut bot = chatbot(&[
        ("PODCYCLE_SHUTDOWN_DELAY", "1s"),
        ("CHATBOT_TOKEN_DELAY", "200ms"),
    ]);
    wait_ready(bot.admin).await;
    let ch = channel(bot.app).await;
    let mut chat = ChatbotClient::new(ch.clone());
    let mut health = HealthClient::new(channel(bot.admin).await);
    let mut stream = chat
        .ask_stream(ask("why do I get 502 during a deploy"))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(!first.token.is_empty() && !first.done);

    let mut watch = health
        .watch(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    let serving = watch.message().await.unwrap().unwrap();
    assert_eq!(serving.status(), ServingStatus::Serving);

    let sent = bot.child.signal("TERM");
    let next = tokio::time::timeout(SOON, watch.message()).await.unwrap();
    let unready = next.unwrap().unwrap();
    assert_eq!(
        unready.status(),
        ServingStatus::NotServing,
        "readiness off at SIGTERM"
    );
    let seen = sent.elapsed();
    // During the delay, new RPCs on the same connection are still answered.
    let reply = chat.ask(ask("what does exit code 4 mean")).await.unwrap();
    assert!(!reply.into_inner().answer.is_empty());
    eprintln!("Watch saw NOT_SERVING {seen:?} after kill -TERM; an RPC was answered after it");

    // The stream goes on, then ends with a last message and OK when the drain starts.
    let mut last = None;
    let ended = tokio::time::timeout(SOON, async {
        while let Some(chunk) = stream.message().await? {
            if chunk.done || chunk.reconnect {
                last = Some(chunk);
            }
        }
        Ok::<_, tonic::Status>(())
    })
    .await
    .expect("the stream ended");
    ended.expect("the stream ended with OK");
    let last = last.expect("a last message");
    assert!(last.reconnect, "cut short by the drain: {last:?}");
    assert!(
        sent.elapsed() >= Duration::from_secs(1),
        "not before the delay"
    );
    let (status, _) = bot.child.wait_exit(SOON);
    assert_eq!(code(status), 0, "{}", bot.child.output());
}
