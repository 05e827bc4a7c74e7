//! [`Receiver`]: a loopback HTTP/1.1 server (hyper) standing in for a webhook endpoint.
//!
//! It records every request (method, path, headers, body) *before* answering, so once a
//! client has seen the response the request is already visible to the test. Answers follow
//! an optional script ([`Reply`]s in order, then 200), which is how retry behaviour is
//! tested against real HTTP. Connections are kept alive, as a pooling client expects.
//! [`Receiver::set_delay`] makes every answer wait, recorded first: a slow sink, whose
//! request is already seen while its client still waits for the confirmation.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

/// One scripted answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// Extra response headers, e.g. `("Retry-After", "2")`.
    pub headers: Vec<(String, String)>,
    /// Response body.
    pub body: String,
}

impl Reply {
    /// A reply with `status`, no extra headers and an empty body.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: String::new(),
        }
    }

    /// Adds a response header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the response body.
    pub fn body(mut self, body: &str) -> Self {
        self.body = body.to_owned();
        self
    }
}

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Received {
    /// The body parsed as JSON, or `Value::Null` if it is not JSON (see `raw`).
    pub body: serde_json::Value,
    /// The body bytes as received.
    pub raw: Vec<u8>,
    /// Request headers in arrival order; names are lower-case (HTTP/1 names are
    /// case-insensitive and hyper normalizes them).
    pub headers: Vec<(String, String)>,
    /// Request method, e.g. `POST`.
    pub method: String,
    /// Path and query, e.g. `/hook`.
    pub path: String,
    /// The status this request was answered with.
    pub status: u16,
    /// When the request was complete (body read), before it was answered.
    pub at: Instant,
}

impl Received {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// State shared between the server task and the [`Receiver`] handle.
#[derive(Debug, Default)]
struct Shared {
    /// Every request so far, in arrival order.
    received: Vec<Received>,
    /// Replies still to give; empty means 200.
    script: VecDeque<Reply>,
    /// How long each answer waits after its request was recorded.
    delay: Duration,
}

/// A running loopback HTTP server; stops (closing its connections) on drop.
#[derive(Debug)]
pub struct Receiver {
    /// Bound port on 127.0.0.1.
    port: u16,
    /// Recorded requests and the remaining script.
    shared: Arc<Mutex<Shared>>,
    /// Each request, again, for [`Receiver::next`].
    rx: mpsc::UnboundedReceiver<Received>,
    /// The accept loop; owns the connection tasks, so aborting it ends them too.
    server: JoinHandle<()>,
}

impl Receiver {
    /// Starts a server on a free port that answers 200 to everything.
    pub async fn start() -> Result<Self> {
        Self::with_script(Vec::new()).await
    }

    /// Starts a server that answers with `script` in order, then 200.
    pub async fn with_script(script: Vec<Reply>) -> Result<Self> {
        Self::bind(0, script).await
    }

    /// Starts on a given port (0 = any): lets a test point a client at a port first and
    /// start listening later, to cover "server not yet listening".
    pub async fn bind(port: u16, script: Vec<Reply>) -> Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .with_context(|| format!("binding 127.0.0.1:{port}"))?;
        let port = listener.local_addr().context("local_addr")?.port();
        let shared = Arc::new(Mutex::new(Shared {
            received: Vec::new(),
            script: script.into(),
            delay: Duration::ZERO,
        }));
        let (tx, rx) = mpsc::unbounded_channel();
        let server = tokio::spawn(serve(listener, Arc::clone(&shared), tx));
        Ok(Self {
            port,
            shared,
            rx,
            server,
        })
    }

    /// The webhook URL: `http://127.0.0.1:PORT/hook` (any path is accepted).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Makes every answer from now on wait `delay` after its request was recorded (zero,
    /// the default, answers at once): a sink that takes that long to confirm.
    pub fn set_delay(&self, delay: Duration) {
        self.lock().delay = delay;
    }

    /// Waits for the next request not yet returned by `next`.
    pub async fn next(&mut self, timeout: Duration) -> Result<Received> {
        match tokio::time::timeout(timeout, self.rx.recv()).await {
            Ok(Some(received)) => Ok(received),
            Ok(None) => anyhow::bail!("receiver server task ended"),
            Err(_) => anyhow::bail!(
                "no request within {timeout:?} ({} received so far)",
                self.count()
            ),
        }
    }

    /// Number of requests received so far, whatever they were answered.
    pub fn count(&self) -> usize {
        self.lock().received.len()
    }

    /// All requests received so far, whatever they were answered.
    pub fn received(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        // A poisoned lock only means a test thread panicked; the data is still usable.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn serve(
    listener: TcpListener,
    shared: Arc<Mutex<Shared>>,
    tx: mpsc::UnboundedSender<Received>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                // Accept errors (e.g. out of fds) are transient; the client will retry.
                let Ok((stream, _)) = accepted else { continue };
                let shared = Arc::clone(&shared);
                let tx = tx.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req| {
                        handle(req, Arc::clone(&shared), tx.clone())
                    });
                    // Keep-alive is hyper's default. A client hanging up is not our error.
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            // Reap finished connections so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Mutex<Shared>>,
    tx: mpsc::UnboundedSender<Received>,
) -> std::result::Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
    let headers = req
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let raw = match req.into_body().collect().await {
        Ok(body) => body.to_bytes().to_vec(),
        // The client went away mid-body: nothing complete to record or answer.
        Err(_) => return Ok(plain(StatusCode::BAD_REQUEST, "incomplete body")),
    };
    let body = serde_json::from_slice(&raw).unwrap_or(serde_json::Value::Null);
    let at = Instant::now();

    let (reply, delay) = {
        let mut shared = shared.lock().unwrap_or_else(|e| e.into_inner());
        let reply = shared
            .script
            .pop_front()
            .unwrap_or_else(|| Reply::status(200));
        let received = Received {
            body,
            raw,
            headers,
            method,
            path,
            status: reply.status,
            at,
        };
        shared.received.push(received.clone());
        // The Receiver may have been dropped already; then nobody is listening.
        let _ = tx.send(received);
        (reply, shared.delay)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }

    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = plain(status, &reply.body);
    for (name, value) in &reply.headers {
        if let (Ok(name), Ok(value)) = (
            hyper::header::HeaderName::from_bytes(name.as_bytes()),
            hyper::header::HeaderValue::from_str(value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    Ok(response)
}

fn plain(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_owned())));
    *response.status_mut() = status;
    response
}
