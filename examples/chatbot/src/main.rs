//! The chatbot binary: logging, then [`chatbot::run`] in the mode `CHATBOT_MODE` names.
//!
//! ```text
//! cargo run --release -p chatbot
//! ```
//!
//! See the library's documentation for its endpoints and environment variables.
#![forbid(unsafe_code)]

#[tokio::main]
async fn main() -> podcycle::Outcome {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match chatbot::Mode::from_env() {
        Ok(mode) => chatbot::run(mode).await,
        Err(e) => podcycle::Outcome::Failed(e),
    }
}
