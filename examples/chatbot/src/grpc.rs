//! The chatbot's questions over gRPC (`proto/chatbot.proto`, service `chatbot.v1.Chatbot`),
//! served on the application port beside the HTTP routes: HTTP/2 requests with
//! `content-type: application/grpc` reach it, with the same warm-up, fault settings, limits
//! and metrics (`http_route="/chatbot.v1.Chatbot/Ask"`, `error_type` the gRPC status name).
//!
//! ```text
//! grpcurl -plaintext -import-path examples/chatbot/proto -proto chatbot.proto \
//!     -d '{"question":"why do I get 502 during a deploy"}' localhost:8080 chatbot.v1.Chatbot/AskStream
//! ```
//!
//! | input | status |
//! |---|---|
//! | an empty or too long question (`CHATBOT_MAX_QUESTION_CHARS`) | `INVALID_ARGUMENT` |
//! | a message over `CHATBOT_MAX_BODY_BYTES` | `RESOURCE_EXHAUSTED` |
//! | an unknown method or service | `UNIMPLEMENTED` |
//! | an injected fault (`CHATBOT_FAULT_ERROR_RATE`) | `INTERNAL` |

use std::pin::Pin;
use std::time::Duration;

use axum::http::StatusCode;
use futures_util::stream::{self, Stream};
use tonic::{Request, Response, Status};

use crate::retrieval::Answer;
use crate::service::{ApiError, AppState};

/// The code generated from `proto/chatbot.proto` (by `build.rs`, with `protox`: no `protoc`).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod pb {
    tonic::include_proto!("chatbot.v1");
}

use pb::chatbot_server::{Chatbot, ChatbotServer};
use pb::{AskChunk, AskReply, AskRequest, Source};

/// The route the chatbot serves the gRPC service on (every method of the service).
pub(crate) const ROUTE: &str = "/chatbot.v1.Chatbot/{*rest}";

/// The `Chatbot` gRPC service over the application's state.
#[derive(Clone)]
pub(crate) struct GrpcChatbot {
    state: AppState,
}

impl GrpcChatbot {
    /// The tonic server for the router, with the body limit of the HTTP routes as its
    /// message limit (larger messages: `RESOURCE_EXHAUSTED`).
    pub(crate) fn server(state: AppState) -> Server {
        let limit = state.settings.max_body_bytes;
        let server = ChatbotServer::new(GrpcChatbot { state }).max_decoding_message_size(limit);
        tower::util::MapResponse::new(server, too_large_is_resource_exhausted as fn(_) -> _)
    }
}

/// What [`GrpcChatbot::server`] returns.
pub(crate) type Server =
    tower::util::MapResponse<ChatbotServer<GrpcChatbot>, fn(GrpcResponse) -> GrpcResponse>;

type GrpcResponse = http::Response<tonic::body::Body>;

/// tonic answers a message over the limit with `OUT_OF_RANGE`; gRPC's status code table
/// says `RESOURCE_EXHAUSTED` ("request message larger than the maximum receive size"), which
/// clients and the metrics should see.
fn too_large_is_resource_exhausted(mut res: GrpcResponse) -> GrpcResponse {
    let headers = res.headers_mut();
    let out_of_range = headers.get("grpc-status").is_some_and(|v| v == "11");
    let too_large = headers.get("grpc-message").is_some_and(|m| {
        let m = m.as_bytes();
        [
            &b"message length too large"[..],
            b"message%20length%20too%20large",
        ]
        .iter()
        .any(|needle| m.windows(needle.len()).any(|w| w == *needle))
    });
    if out_of_range && too_large {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    res
}

/// The gRPC status for an HTTP error of the chatbot.
fn status(e: ApiError) -> Status {
    let ApiError(code, message) = e;
    match code {
        StatusCode::UNPROCESSABLE_ENTITY | StatusCode::BAD_REQUEST => {
            Status::invalid_argument(message)
        }
        StatusCode::SERVICE_UNAVAILABLE => Status::unavailable(message),
        StatusCode::PAYLOAD_TOO_LARGE => Status::resource_exhausted(message),
        _ => Status::internal(message),
    }
}

fn sources(answer: &Answer) -> Vec<Source> {
    answer
        .sources
        .iter()
        .map(|s| Source {
            slug: s.slug.clone(),
            title: s.title.clone(),
            score: (s.score * 1000.0).round() / 1000.0,
        })
        .collect()
}

/// The stream of `AskStream`.
type ChunkStream = Pin<Box<dyn Stream<Item = Result<AskChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Chatbot for GrpcChatbot {
    async fn ask(&self, req: Request<AskRequest>) -> Result<Response<AskReply>, Status> {
        let state = &self.state;
        let question = state.validate(&req.get_ref().question).map_err(status)?;
        state.faults().await.map_err(status)?;
        let answer = state.index().map_err(status)?.answer(&question, 3);
        state.count(&answer);
        Ok(Response::new(AskReply {
            sources: sources(&answer),
            answer: answer.text,
            version: state.version.clone(),
        }))
    }

    type AskStreamStream = ChunkStream;

    async fn ask_stream(
        &self,
        req: Request<AskRequest>,
    ) -> Result<Response<Self::AskStreamStream>, Status> {
        let state = &self.state;
        let question = state.validate(&req.get_ref().question).map_err(status)?;
        state.faults().await.map_err(status)?;
        let answer = state.index().map_err(status)?.answer(&question, 3);
        state.count(&answer);
        let last = AskChunk {
            done: true,
            sources: sources(&answer),
            version: state.version.clone(),
            ..AskChunk::default()
        };
        let tokens: Vec<String> = answer
            .text
            .split_inclusive(' ')
            .map(str::to_owned)
            .collect();
        let draining: Pin<Box<dyn std::future::Future<Output = ()> + Send>> = match &state.lifecycle
        {
            Some(l) => Box::pin(l.draining()),
            None => Box::pin(std::future::pending()),
        };
        Ok(Response::new(Box::pin(chunks(
            tokens,
            last,
            state.settings.token_delay,
            draining,
        ))))
    }
}

/// The answer token by token, then the last message with the sources; if the server starts
/// draining first, a last message with `reconnect` set. Either way the call ends `OK`.
fn chunks(
    tokens: Vec<String>,
    last: AskChunk,
    every: Duration,
    draining: Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
) -> impl Stream<Item = Result<AskChunk, Status>> + Send {
    stream::unfold(
        (0usize, Some(last), tokens, draining),
        move |(i, last, tokens, mut draining)| async move {
            let last_chunk = last?;
            if i == tokens.len() {
                return Some((Ok(last_chunk), (i, None, tokens, draining)));
            }
            tokio::select! {
                biased;
                _ = draining.as_mut() => {
                    let chunk = AskChunk {
                        reconnect: true,
                        version: last_chunk.version,
                        ..AskChunk::default()
                    };
                    return Some((Ok(chunk), (i, None, tokens, draining)));
                }
                _ = tokio::time::sleep(if i == 0 { Duration::ZERO } else { every }) => {}
            }
            let chunk = AskChunk {
                token: tokens[i].clone(),
                ..AskChunk::default()
            };
            Some((Ok(chunk), (i + 1, Some(last_chunk), tokens, draining)))
        },
    )
}
