//! The chatbot binary: logging ([`podcycle::logging::init`]: `LOG_FORMAT`, `RUST_LOG`), then
//! [`chatbot::run`] in the mode `CHATBOT_MODE` names.
//!
//! ```text
//! cargo run --release -p chatbot
//! LOG_FORMAT=json cargo run --release -p chatbot
//! ```
//!
//! See the library's documentation for its endpoints and environment variables.
#![forbid(unsafe_code)]

#[tokio::main]
async fn main() -> podcycle::Outcome {
    if let Err(e) = podcycle::logging::init() {
        return podcycle::Outcome::Failed(e.to_string());
    }
    match chatbot::Mode::from_env() {
        Ok(mode) => chatbot::run(mode).await,
        Err(e) => podcycle::Outcome::Failed(e),
    }
}
