//! The `[server] listen` endpoint: `GET /healthz`, `/readyz` and `/metrics` over HTTP/1.1
//! (hyper), for a supervisor, a load balancer or Prometheus.
//!
//! - `/healthz`: 200 `ok` while the process serves at all (liveness).
//! - `/readyz`: 200 `ok` only while herald can take mail: an IMAP session is live, the
//!   server answered within `ready_within`, and the store accepts a write transaction;
//!   otherwise 503 with a one-line reason. A message skipped as unreadable does not make
//!   herald unready (the mail after it flows), but the 200 names the latest ones, so a
//!   person looking finds them.
//! - `/metrics`: the [`Metrics`] exposition, with the outbox depth read from the store.
//!
//! - `POST /push`: a push hint from Dovecot's push_notification plugin ([`crate::push`]):
//!   answered at once (204; 403 without the `[server] push_token`; 400 for a body that is not
//!   the script's JSON), after waking the mailbox it names, which then fetches.
//!
//! `HEAD` is answered like `GET`; other methods get 405, other paths 404.
//!
//! The endpoint must never become a way to hurt the daemon, so every client is bounded:
//! at most [`MAX_CONNECTIONS`] at once (extra ones are closed at once), request heads of at
//! most [`MAX_BUF_SIZE`] bytes that must arrive within [`HEADER_READ_TIMEOUT`] (an idle or
//! stuck client is dropped then), request bodies are never read (but a push's, at most
//! [`push::MAX_BODY`] bytes within [`PUSH_BODY_TIMEOUT`]), and a connection is closed
//! gracefully after [`MAX_CONNECTION_AGE`]. Store calls run one at a time under
//! [`STORE_TIMEOUT`], so a wedged database makes probes fail fast instead of piling up
//! calls.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use async_trait::async_trait;

use crate::error::chain;
use crate::metrics::{self, Metrics, PushOutcome};
use crate::push::{self, Pushes};
use crate::store::AdminStore;

/// Connections served at once. A scraper, a supervisor and an operator's curl need a handful;
/// the cap keeps a misbehaving client from taking the process's file descriptors.
pub const MAX_CONNECTIONS: usize = 64;

/// How long a client has to send a request head, including between keep-alive requests.
/// Prometheus and kubelet send theirs at once; 10 s is generous and frees a stuck slot soon.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Per-connection read buffer, which bounds a request head. hyper's minimum is 8 KiB; our
/// requests are a request line and a few headers.
pub const MAX_BUF_SIZE: usize = 16 * 1024;

/// A connection is asked to close (after its current response) at this age, so a client
/// that stops reading responses cannot hold a slot forever. Longer than Prometheus's longest
/// common scrape interval, so keep-alive still saves reconnections.
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(300);

/// How long a connection may take to finish its response once asked to close (age or
/// shutdown) before it is dropped.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Budget for one store call (the writability probe or the outbox counts), waiting for the
/// previous one included. Under kubelet's and most load balancers' probe timeouts of a few
/// seconds; a store slower than this is not ready anyway.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a push's body may take to arrive after its head. The script sends both at once;
/// a client that dawdles gets a 400 rather than holding its connection slot.
pub const PUSH_BODY_TIMEOUT: Duration = Duration::from_secs(2);

/// What the endpoint needs from the store; implemented for every [`AdminStore`], and by
/// fakes in tests.
#[async_trait]
pub trait StoreProbe: Send + Sync + 'static {
    /// Fails unless the store can take a write transaction now.
    async fn probe_writable(&self) -> Result<()>;
    /// Outbox row counts as `(sink, state, count)`.
    async fn outbox_counts(&self) -> Result<Vec<(String, String, u64)>>;
}

#[async_trait]
impl<T: AdminStore + ?Sized + 'static> StoreProbe for T {
    async fn probe_writable(&self) -> Result<()> {
        Ok(self.check_writable().await?)
    }

    async fn outbox_counts(&self) -> Result<Vec<(String, String, u64)>> {
        Ok(self
            .counts()
            .await?
            .into_iter()
            .map(|(sink, state, n)| (sink, state.as_str().to_owned(), n))
            .collect())
    }
}

/// Binds `listen`; returns the listener and the address it got (the port, when `listen`
/// asked for port 0). Bind here, before spawning [`serve_on`], so a taken port stops herald at
/// start.
pub async fn bind(listen: SocketAddr) -> Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} ([server] listen)"))?;
    let local = listener
        .local_addr()
        .context("cannot read the listening address")?;
    Ok((listener, local))
}

/// Binds `listen` and serves until `stop` is cancelled. A bind error is returned at once.
pub async fn serve<S: StoreProbe + ?Sized>(
    listen: SocketAddr,
    metrics: Arc<Metrics>,
    store: Arc<S>,
    ready_within: Duration,
    stop: CancellationToken,
) -> Result<()> {
    let (listener, _) = bind(listen).await?;
    let pushes = Arc::new(Pushes::new(None, metrics.clone()));
    serve_on(listener, metrics, store, pushes, ready_within, stop).await
}

/// Shared by every connection.
struct State<S: ?Sized> {
    /// The metrics to expose, and the IMAP half of readiness.
    metrics: Arc<Metrics>,
    /// The store half of readiness, and the outbox depth.
    store: Arc<S>,
    /// How recent the IMAP server's last answer must be for `/readyz`.
    ready_within: Duration,
    /// One store call at a time (see [`STORE_TIMEOUT`]).
    store_turn: Arc<Semaphore>,
    /// Where `POST /push` hints go.
    pushes: Arc<Pushes>,
}

/// Serves on `listener` until `stop` is cancelled; then asks open connections to close and
/// waits up to [`CLOSE_GRACE`] for them. Push hints go to `pushes`.
pub async fn serve_on<S: StoreProbe + ?Sized>(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    store: Arc<S>,
    pushes: Arc<Pushes>,
    ready_within: Duration,
    stop: CancellationToken,
) -> Result<()> {
    if let Ok(address) = listener.local_addr() {
        info!(%address, "Serving /metrics, /healthz, /readyz and /push.");
    }
    let state = Arc::new(State {
        metrics,
        store,
        ready_within,
        store_turn: Arc::new(Semaphore::new(1)),
        pushes,
    });
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        debug!(%peer, "Too many connections; closing a new one.");
                        continue;
                    };
                    let state = state.clone();
                    let stop = stop.clone();
                    connections.spawn(async move {
                        connection(stream, peer, state, stop).await;
                        drop(slot);
                    });
                }
                Err(error) => {
                    // Out of file descriptors or a connection reset before accept: transient.
                    // Pause so a persistent error does not spin (mini-redis does the same).
                    warn!(%error, "Cannot accept a connection.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(CLOSE_GRACE + Duration::from_millis(500), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.abort_all();
    }
    Ok(())
}

/// Serves one connection, closing it gracefully at [`MAX_CONNECTION_AGE`] or at `stop`.
async fn connection<S: StoreProbe + ?Sized>(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    state: Arc<State<S>>,
    stop: CancellationToken,
) {
    let service = service_fn(move |request| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(respond(&state, request).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_BUF_SIZE)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let age = tokio::time::sleep(MAX_CONNECTION_AGE);
    tokio::pin!(age);
    let result = tokio::select! {
        result = conn.as_mut() => Some(result),
        () = stop.cancelled() => None,
        () = &mut age => None,
    };
    let result = match result {
        Some(result) => result,
        None => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(CLOSE_GRACE, conn.as_mut()).await {
                Ok(result) => result,
                Err(_) => return,
            }
        }
    };
    if let Err(error) = result {
        // Timeouts, resets and malformed requests are the client's problem, not herald's.
        debug!(%peer, %error, "HTTP connection ended with an error.");
    }
}

/// Routes one request.
async fn respond<S: StoreProbe + ?Sized>(
    state: &State<S>,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    if path == "/push" {
        return push(state, request).await;
    }
    let known = matches!(path, "/healthz" | "/readyz" | "/metrics");
    if !known {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match path {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => match ready(state).await {
            Ok(()) => match state.metrics.skipped() {
                skipped if skipped.is_empty() => text(StatusCode::OK, "ok\n"),
                skipped => text(
                    StatusCode::OK,
                    format!(
                        "ok; skipped unreadable messages (alerted on, left on the server): {}\n",
                        one_line(&skipped.join(", "))
                    ),
                ),
            },
            Err(reason) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{}\n", one_line(&reason)),
            ),
        },
        _ => {
            let rows = match store_call(state, |store| async move { store.outbox_counts().await })
                .await
            {
                Ok(rows) => rows,
                Err(error) => {
                    // Serve the other metrics anyway: a failed scrape would hide them exactly
                    // when they matter. /readyz reports the store.
                    warn!(error = %chain(error.as_ref()), "Cannot read the outbox for /metrics.");
                    Vec::new()
                }
            };
            let mut response = Response::new(Full::new(Bytes::from(state.metrics.encode(&rows))));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(metrics::CONTENT_TYPE),
            );
            no_cache(response)
        }
    }
}

/// `POST /push`: reads the bounded body, hands the hint over (which wakes its mailbox without
/// waiting for it), and answers.
async fn push<S: StoreProbe + ?Sized>(
    state: &State<S>,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if request.method() != Method::POST {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    let (parts, body) = request.into_parts();
    let token = parts
        .headers
        .get(push::TOKEN_HEADER)
        .map(HeaderValue::as_bytes);
    let body = tokio::time::timeout(
        PUSH_BODY_TIMEOUT,
        Limited::new(body, push::MAX_BODY).collect(),
    )
    .await
    .ok()
    .and_then(Result::ok)
    .map(|collected| collected.to_bytes());
    match state.pushes.hint(token, body.as_deref()) {
        PushOutcome::Woke | PushOutcome::Unknown => {
            let mut response = text(StatusCode::NO_CONTENT, Bytes::new());
            response.headers_mut().remove(CONTENT_TYPE);
            response
        }
        PushOutcome::Refused => text(StatusCode::FORBIDDEN, "push token missing or wrong\n"),
        PushOutcome::Malformed => text(
            StatusCode::BAD_REQUEST,
            "expected {\"user\": ..., \"mailbox\": ...}\n",
        ),
    }
}

/// `Ok` when herald is ready; else the reason.
async fn ready<S: StoreProbe + ?Sized>(state: &State<S>) -> Result<(), String> {
    state.metrics.imap_ready(state.ready_within)?;
    store_call(state, |store| async move { store.probe_writable().await })
        .await
        .map_err(|error| chain(error.as_ref()).to_string())
}

/// Runs `call`, one store call at a time, within [`STORE_TIMEOUT`]. The call runs as a task
/// of its own that keeps its turn until it finishes, even after a timeout, so calls into a
/// wedged store never pile up.
async fn store_call<S, T, F, Fut>(state: &State<S>, call: F) -> Result<T>
where
    S: StoreProbe + ?Sized,
    T: Send + 'static,
    F: FnOnce(Arc<S>) -> Fut,
    Fut: std::future::Future<Output = Result<T>> + Send + 'static,
{
    let turn = state.store_turn.clone();
    let work = call(state.store.clone());
    let attempt = async move {
        // Waiting for the turn is given up with the timeout; a call that has begun is not.
        let permit = turn
            .acquire_owned()
            .await
            .context("the store probe is closed")?;
        tokio::spawn(async move {
            let result = work.await;
            drop(permit);
            result
        })
        .await
        .context("the store call failed")?
    };
    match tokio::time::timeout(STORE_TIMEOUT, attempt).await {
        Ok(result) => result,
        Err(_) => Err(anyhow::anyhow!(
            "the state database did not answer within {} s",
            STORE_TIMEOUT.as_secs()
        )),
    }
}

/// `reason` on one line.
fn one_line(reason: &str) -> String {
    reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A plain-text response.
fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    no_cache(response)
}

/// Marks a response as never cacheable: every probe must see the present state.
fn no_cache(mut response: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
