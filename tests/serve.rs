//! The `[server] listen` endpoint over real loopback sockets: status codes, readiness
//! transitions, the metrics exposition, and clients that misbehave.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use herald::metrics::{Metrics, Outcome, SessionHealth};
use herald::serve::{bind, serve, serve_on, StoreProbe, HEADER_READ_TIMEOUT, STORE_TIMEOUT};
use herald::store::{self, Access, MailboxId, Store};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Generous bound for anything that should take milliseconds.
const QUICK: Duration = Duration::from_secs(5);

/// A store double whose writability and counts the test controls.
#[derive(Default)]
struct FakeStore {
    read_only: AtomicBool,
    rows: Vec<(String, String, u64)>,
}

#[async_trait::async_trait]
impl StoreProbe for FakeStore {
    async fn probe_writable(&self) -> anyhow::Result<()> {
        if self.read_only.load(Ordering::Relaxed) {
            anyhow::bail!("attempt to write a readonly database")
        }
        Ok(())
    }

    async fn outbox_counts(&self) -> anyhow::Result<Vec<(String, String, u64)>> {
        Ok(self.rows.clone())
    }
}

struct Server {
    base: String,
    address: SocketAddr,
    metrics: Arc<Metrics>,
    /// The one watched mailbox's session, as the IMAP source reports it.
    session: Arc<SessionHealth>,
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Server {
    async fn start<S: StoreProbe + ?Sized>(store: Arc<S>, ready_within: Duration) -> Server {
        let (listener, address) = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let metrics = Metrics::new();
        let session = metrics.session("default/INBOX");
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve_on(
            listener,
            metrics.clone(),
            store,
            Arc::new(herald::push::Pushes::new(None, metrics.clone())),
            ready_within,
            stop.clone(),
        ));
        Server {
            base: format!("http://{address}"),
            address,
            metrics,
            session,
            stop,
            task,
        }
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let response = client()
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    async fn shut_down(self) {
        self.stop.cancel();
        tokio::time::timeout(QUICK, self.task)
            .await
            .expect("serve returns soon after stop")
            .unwrap()
            .unwrap();
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(QUICK).build().unwrap()
}

async fn real_store() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store = store::open(dir.path().join("herald.db"), Access::Daemon)
        .await
        .unwrap();
    (dir, store)
}

#[tokio::test]
async fn healthz_is_ok() {
    let (_dir, store) = real_store().await;
    let server = Server::start(store, Duration::from_secs(60)).await;
    assert_eq!(server.get("/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(server.get("/healthz?verbose").await.0, 200);
    server.shut_down().await;
}

#[tokio::test]
async fn readyz_follows_the_imap_session() {
    let (_dir, store) = real_store().await;
    let server = Server::start(store, Duration::from_secs(60)).await;
    let (status, body) = server.get("/readyz").await;
    assert_eq!(status, 503);
    assert_eq!(body, "no IMAP session\n");

    server.session.set_live(true);
    let (status, body) = server.get("/readyz").await;
    assert_eq!(
        (status, body.as_str()),
        (503, "no answer from the IMAP server yet\n")
    );

    server.session.contact();
    assert_eq!(server.get("/readyz").await, (200, "ok\n".to_owned()));

    server.session.set_live(false);
    assert_eq!(server.get("/readyz").await.0, 503);
    server.shut_down().await;
}

#[tokio::test]
async fn readyz_fails_when_the_server_went_quiet() {
    let (_dir, store) = real_store().await;
    // A window wide enough that a loaded machine answers the first probe within it.
    let server = Server::start(store, Duration::from_millis(900)).await;
    server.session.set_live(true);
    server.session.contact();
    assert_eq!(server.get("/readyz").await.0, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body) = server.get("/readyz").await;
    assert_eq!(status, 503);
    assert!(
        body.starts_with("no answer from the IMAP server for 1 s"),
        "{body}"
    );
    assert_eq!(body.lines().count(), 1);
    server.shut_down().await;
}

#[tokio::test]
async fn readyz_fails_when_the_store_is_not_writable() {
    let store = Arc::new(FakeStore::default());
    let server = Server::start(store.clone(), Duration::from_secs(60)).await;
    server.session.set_live(true);
    server.session.contact();
    assert_eq!(server.get("/readyz").await.0, 200);
    store.read_only.store(true, Ordering::Relaxed);
    let (status, body) = server.get("/readyz").await;
    assert_eq!(status, 503);
    assert_eq!(body, "attempt to write a readonly database\n");
    server.shut_down().await;
}

#[tokio::test]
async fn real_store_probe_is_writable_and_changes_nothing() {
    let (_dir, store) = real_store().await;
    store.probe_writable().await.unwrap();
    assert!(store.counts().await.unwrap().is_empty());
    assert!(store
        .pending_marks(&MailboxId::new("default", "INBOX"), 0)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn readyz_fails_fast_while_another_writer_holds_the_store() {
    let (dir, store) = real_store().await;
    let server = Server::start(store, Duration::from_secs(60)).await;
    server.session.set_live(true);
    server.session.contact();
    assert_eq!(server.get("/readyz").await.0, 200);

    // Another process holding SQLite's write lock: the probe must not report ready, and must
    // answer within STORE_TIMEOUT although the store waits up to its busy timeout.
    let other = rusqlite::Connection::open(dir.path().join("herald.db")).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let started = std::time::Instant::now();
    let (status, body) = server.get("/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("did not answer within"), "{body}");
    assert!(started.elapsed() < STORE_TIMEOUT + Duration::from_secs(1));
    // While the stuck call still holds its turn, a second probe also fails fast.
    assert_eq!(server.get("/readyz").await.0, 503);
    // /metrics still answers, without the outbox rows.
    let (status, text) = server.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(text.contains("herald_messages_fetched_total 0"), "{text}");

    other.execute_batch("ROLLBACK").unwrap();
    let ready = async {
        loop {
            if server.get("/readyz").await.0 == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(QUICK, ready)
        .await
        .expect("ready again once the lock is released");
    server.shut_down().await;
}

#[tokio::test]
async fn metrics_exposition() {
    let store = Arc::new(FakeStore {
        rows: vec![
            ("ops-slack".into(), "pending".into(), 3),
            ("ops-slack".into(), "sent".into(), 40),
        ],
        ..FakeStore::default()
    });
    let server = Server::start(store, Duration::from_secs(60)).await;
    server.metrics.messages_fetched(2);
    server.metrics.alert("cron", Some("backups"));
    server.metrics.delivery("ops-slack", Outcome::Delivered);
    server.metrics.delivery_latency("ops-slack", 1.5);

    let response = client()
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    for line in [
        "herald_messages_fetched_total 2",
        r#"herald_alerts_total{kind="cron",rule="backups"} 1"#,
        r#"herald_deliveries_total{sink="ops-slack",outcome="delivered"} 1"#,
        r#"herald_delivery_latency_seconds_bucket{le="2.0",sink="ops-slack"} 1"#,
        r#"herald_outbox_rows{sink="ops-slack",state="pending"} 3"#,
        r#"herald_outbox_rows{sink="ops-slack",state="sent"} 40"#,
        "herald_imap_session_up 0",
        "herald_imap_reconnects_total 0",
        "# EOF",
    ] {
        assert!(lines.contains(&line), "missing {line:?} in\n{text}");
    }
    // Every sample line is `name[{labels}] value`, with a numeric value.
    for line in lines.iter().filter(|l| !l.starts_with('#')) {
        let (name, value) = line.rsplit_once(' ').unwrap();
        assert!(name.starts_with("herald_"), "{line}");
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
    assert!(lines
        .iter()
        .any(|l| l.starts_with("herald_imap_last_contact_seconds ")));
    server.shut_down().await;
}

#[tokio::test]
async fn metrics_with_a_real_store() {
    let (_dir, store) = real_store().await;
    let server = Server::start(store, Duration::from_secs(60)).await;
    let (status, text) = server.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(text.contains("herald_messages_fetched_total 0"), "{text}");
    server.shut_down().await;
}

/// `/push` takes POST only, answers a hint for no watched mailbox with 204 (counted), and a
/// body that is not the script's JSON, or longer than a hint can be, with 400.
#[tokio::test]
async fn push_hints_are_bounded_and_counted() {
    let server = Server::start(Arc::new(FakeStore::default()), Duration::from_secs(60)).await;
    let (status, _) = server.get("/push").await;
    assert_eq!(status, 405);
    let post = |body: String| {
        client()
            .post(format!("{}/push", server.base))
            .body(body)
            .send()
    };
    let unknown = post(r#"{"user":"nobody","mailbox":"INBOX","uid":1}"#.to_owned())
        .await
        .unwrap();
    assert_eq!(unknown.status().as_u16(), 204);
    assert_eq!(
        post("not json".to_owned()).await.unwrap().status().as_u16(),
        400
    );
    let huge = format!(
        r#"{{"user":"nobody","mailbox":"INBOX","x":"{}"}}"#,
        "x".repeat(herald::push::MAX_BODY)
    );
    assert_eq!(post(huge).await.unwrap().status().as_u16(), 400);
    let (_, text) = server.get("/metrics").await;
    assert!(
        text.contains("herald_pushes_total{outcome=\"unknown\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("herald_pushes_total{outcome=\"malformed\"} 2"),
        "{text}"
    );
    server.shut_down().await;
}

#[tokio::test]
async fn unknown_paths_and_methods() {
    let (_dir, store) = real_store().await;
    let server = Server::start(store, Duration::from_secs(60)).await;
    assert_eq!(server.get("/").await.0, 404);
    assert_eq!(server.get("/metrics/x").await.0, 404);
    let response = client()
        .post(format!("{}/metrics", server.base))
        .body("x".repeat(100_000))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 405);
    assert_eq!(response.headers()["allow"], "GET, HEAD");
    let response = client()
        .head(format!("{}/healthz", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(server.get("/healthz").await.0, 200);
    server.shut_down().await;
}

/// Sends raw bytes and reads until the server closes or `QUICK` passes.
async fn raw(address: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(QUICK, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn keep_alive_serves_several_requests_then_close_closes() {
    let (_dir, store) = real_store().await;
    let server = Server::start(store, Duration::from_secs(60)).await;
    let started = std::time::Instant::now();
    let out = raw(
        server.address,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /nope HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2, "{out}");
    assert_eq!(out.matches("HTTP/1.1 404 Not Found").count(), 1, "{out}");
    assert!(started.elapsed() < QUICK, "Connection: close was honoured");
    let out = raw(server.address, b"GET /healthz HTTP/1.0\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.0 200 OK"), "{out}");
    server.shut_down().await;
}

#[tokio::test]
async fn oversized_and_malformed_requests_are_refused() {
    let (_dir, store) = real_store().await;
    let server = Server::start(store, Duration::from_secs(60)).await;
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let out = raw(server.address, big.as_bytes()).await;
    assert!(out.is_empty() || out.starts_with("HTTP/1.1 431"), "{out}");
    let out = raw(server.address, b"\x16\x03\x01 not http at all\r\n\r\n").await;
    assert!(out.is_empty() || out.starts_with("HTTP/1.1 400"), "{out}");
    assert_eq!(server.get("/healthz").await.0, 200);
    server.shut_down().await;
}

#[tokio::test]
async fn silent_clients_do_not_block_others() {
    let (_dir, store) = real_store().await;
    let server = Server::start(store, Duration::from_secs(60)).await;
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(server.address).await.unwrap());
    }
    // One that sent half a request head, too.
    let mut half = TcpStream::connect(server.address).await.unwrap();
    half.write_all(b"GET /metrics HTTP/1.1\r\nHost:")
        .await
        .unwrap();
    for _ in 0..5 {
        let (status, _) = tokio::time::timeout(QUICK, server.get("/healthz"))
            .await
            .expect("served despite silent clients");
        assert_eq!(status, 200);
    }
    // Stopping does not wait for them either.
    server.shut_down().await;
    drop(silent);
}

#[tokio::test(start_paused = true)]
async fn a_silent_client_is_dropped_after_the_header_timeout() {
    let store = Arc::new(FakeStore::default());
    let server = Server::start(store, Duration::from_secs(60)).await;
    let mut stream = TcpStream::connect(server.address).await.unwrap();
    let started = tokio::time::Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(HEADER_READ_TIMEOUT * 3, stream.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server closed the idle connection");
    let waited = started.elapsed();
    assert!(
        waited >= HEADER_READ_TIMEOUT && waited < HEADER_READ_TIMEOUT * 2,
        "{waited:?}"
    );
    server.shut_down().await;
}

#[tokio::test(start_paused = true)]
async fn an_idle_keep_alive_connection_is_dropped_after_the_header_timeout() {
    let store = Arc::new(FakeStore::default());
    let server = Server::start(store, Duration::from_secs(60)).await;
    let mut stream = TcpStream::connect(server.address).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200 OK"));
    let started = tokio::time::Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(HEADER_READ_TIMEOUT * 3, stream.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the server closed the idle connection");
    assert!(started.elapsed() < HEADER_READ_TIMEOUT * 2);
    server.shut_down().await;
}

#[tokio::test]
async fn bind_errors_are_returned() {
    let (listener, address) = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let (_dir, store) = real_store().await;
    let error = serve(
        address,
        Metrics::new(),
        store,
        Duration::from_secs(60),
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(
        format!("{error:#}").contains(&format!("cannot listen on {address}")),
        "{error:#}"
    );
    drop(listener);
}

#[tokio::test]
async fn serve_runs_until_stopped() {
    let (_dir, store) = real_store().await;
    let stop = CancellationToken::new();
    // Port 0 through the public entry point: it serves, then returns on stop.
    let task = tokio::spawn(serve(
        "127.0.0.1:0".parse().unwrap(),
        Metrics::new(),
        store,
        Duration::from_secs(60),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!task.is_finished());
    stop.cancel();
    tokio::time::timeout(QUICK, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
