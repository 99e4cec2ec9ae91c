//! A small HTTP/1.1 client over hyper's connection API, so tests see exactly what happens on
//! one connection: `Connection: close`, resets, truncated bodies.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A response as the test sees it.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn closes(&self) -> bool {
        self.headers
            .get(http::header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"))
    }
}

/// One keep-alive HTTP/1.1 connection.
pub struct Conn {
    sender: SendRequest<Empty<Bytes>>,
    driver: tokio::task::JoinHandle<Result<(), hyper::Error>>,
    addr: SocketAddr,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        let driver = tokio::spawn(conn);
        Ok(Conn {
            sender,
            driver,
            addr,
        })
    }

    /// Sends GET `path` and reads the whole body. Any reset or truncation is an `Err`.
    pub async fn get(&mut self, path: &str) -> Result<Reply, String> {
        self.sender
            .ready()
            .await
            .map_err(|e| format!("connection not ready: {e}"))?;
        let req = Request::get(path)
            .header("host", self.addr.to_string())
            .body(Empty::new())
            .unwrap();
        let res = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = res.status();
        let headers = res.headers().clone();
        let body = res
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body failed: {e}"))?
            .to_bytes();
        Ok(Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    /// Whether the connection has been closed (by either side).
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Waits for the connection to end; `Ok` if it ended cleanly.
    pub async fn finished(self) -> Result<(), String> {
        drop(self.sender);
        match self.driver.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("connection error: {e}")),
            Err(e) => Err(format!("driver panicked: {e}")),
        }
    }
}

/// GET on a fresh connection.
pub async fn get(addr: SocketAddr, path: &str) -> Result<Reply, String> {
    let mut c = Conn::open(addr)
        .await
        .map_err(|e| format!("connect failed: {e}"))?;
    c.get(path).await
}

/// GET with an `Accept` header on a fresh connection.
pub async fn get_json(addr: SocketAddr, path: &str) -> Result<serde_json::Value, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", addr.to_string())
        .header("accept", "application/json")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let body = res.into_body().collect().await.map_err(|e| e.to_string())?;
    serde_json::from_slice(&body.to_bytes()).map_err(|e| e.to_string())
}

/// A streaming GET: returns the text received so far and, on failure, the error that cut it.
pub async fn stream(addr: SocketAddr, path: &str) -> (String, Result<(), String>) {
    let mut c = match Conn::open(addr).await {
        Ok(c) => c,
        Err(e) => return (String::new(), Err(format!("connect failed: {e}"))),
    };
    let req = Request::get(path)
        .header("host", addr.to_string())
        .body(Empty::new())
        .unwrap();
    let res = match c.sender.send_request(req).await {
        Ok(r) => r,
        Err(e) => return (String::new(), Err(format!("request failed: {e}"))),
    };
    let mut body = res.into_body();
    let mut text = String::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    text.push_str(&String::from_utf8_lossy(d));
                }
            }
            Err(e) => return (text, Err(format!("stream cut: {e}"))),
        }
    }
    (text, Ok(()))
}

/// An HTTP/2 (prior knowledge) connection to `addr` through hyper's client: the sender, and
/// the connection's driver spawned on the current runtime (its result says whether the
/// connection ended cleanly).
pub async fn h2<B>(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<B>,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
)
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .unwrap();
    (sender, tokio::spawn(conn))
}
