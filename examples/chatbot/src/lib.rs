//! A customer-support chatbot on podcycle: it loads and indexes a knowledge base and a
//! (simulated) model as warm-ups, answers from BM25 retrieval with cited sources, streams
//! answers as server-sent events and over a WebSocket that end cleanly when the pod drains, and records
//! version-labelled metrics.
//!
//! ```no_run
//! #[tokio::main]
//! async fn main() -> podcycle::Outcome {
//!     match chatbot::Mode::from_env() {
//!         Ok(mode) => chatbot::run(mode).await,
//!         Err(e) => podcycle::Outcome::Failed(e),
//!     }
//! }
//! ```
//!
//! The `chatbot` binary is that `main` with logging:
//!
//! ```text
//! cargo run --release -p chatbot
//! curl -s localhost:9090/readyz?verbose
//! curl -s localhost:8080/v1/chat -H 'content-type: application/json' \
//!      -d '{"question":"How do I size terminationGracePeriodSeconds?"}'
//! curl -sN 'localhost:8080/v1/chat/stream?question=what+does+exit+code+4+mean'
//! websocat ws://localhost:8080/v1/chat/ws   # a WebSocket: one text message per question
//! ```
//!
//! Streams (SSE and the WebSocket) end at their own moment of podcycle's staggered drain
//! signal (`Lifecycle::stream_drain`): SSE with `event: reconnect`, the WebSocket, once the
//! answer in progress is finished, with close 1001.
//!
//! Environment (besides podcycle's `PODCYCLE_*` and `APP_VERSION`):
//! `CHATBOT_WARMUP_DELAY` (2s), `CHATBOT_KNOWLEDGE_DIR` (built-in articles when unset),
//! `CHATBOT_FAULT_ERROR_RATE` (0), `CHATBOT_FAULT_LATENCY` (0s), `CHATBOT_FAULT_CPU` (0s: CPU
//! burned per chat request, at most 1s), `CHATBOT_FAULT_LEAK` (0: bytes kept per chat request,
//! never freed, 256 MiB in all at most), `CHATBOT_TOKEN_DELAY` (30ms),
//! `CHATBOT_MAX_QUESTION_CHARS` (2000), `CHATBOT_MAX_BODY_BYTES` (16384), and `CHATBOT_MODE`
//! (`podcycle`; `plain` and `graceful` are the rollout drill's baselines, see [`Mode`]).
#![forbid(unsafe_code)]

pub mod grpc;
mod retrieval;
mod service;

pub use service::{run, Mode};
