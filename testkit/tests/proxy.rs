//! The fault proxy passes, delays, black-holes, resets, cuts and refuses, switchably while
//! connections are live, in front of an echo server and in front of a real Dovecot.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use herald_testkit::{plain_mail, Dovecot, Fault, FaultProxy, RawImap, COMMAND_TIMEOUT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(5);
/// How long "nothing arrives" is watched for; a pass would answer in well under 1 ms.
const QUIET: Duration = Duration::from_millis(300);
const DELAY: Duration = Duration::from_millis(200);

/// An echo server on 127.0.0.1:0; it stops when the test's runtime does.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

async fn proxied_echo() -> (FaultProxy, TcpStream) {
    let proxy = FaultProxy::start(echo_server().await).await.unwrap();
    let client = TcpStream::connect(proxy.addr()).await.unwrap();
    (proxy, client)
}

/// Writes `data` and reads the same number of bytes back; returns them and the time taken.
async fn round_trip(client: &mut TcpStream, data: &[u8]) -> (Vec<u8>, Duration) {
    let start = Instant::now();
    client.write_all(data).await.unwrap();
    let mut back = vec![0; data.len()];
    tokio::time::timeout(WAIT, client.read_exact(&mut back))
        .await
        .expect("echo timed out")
        .unwrap();
    (back, start.elapsed())
}

/// Reads until the connection ends; returns the bytes and how it ended (`None` for EOF).
async fn read_to_end(client: &mut TcpStream) -> (Vec<u8>, Option<ErrorKind>) {
    let mut got = Vec::new();
    let ended = tokio::time::timeout(WAIT, client.read_to_end(&mut got))
        .await
        .expect("connection still open");
    (got, ended.err().map(|e| e.kind()))
}

async fn assert_silent(client: &mut TcpStream) {
    let mut buf = [0; 64];
    let read = tokio::time::timeout(QUIET, client.read(&mut buf)).await;
    assert!(
        read.is_err(),
        "expected no bytes and an open connection, got {read:?}"
    );
}

async fn wait_connections(proxy: &FaultProxy, n: usize) {
    let deadline = Instant::now() + WAIT;
    while proxy.connections() != n {
        assert!(
            Instant::now() < deadline,
            "{} connections open, want {n}",
            proxy.connections()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn pass_forwards_both_ways_and_counts_connections() {
    let (proxy, mut client) = proxied_echo().await;
    assert_ne!(proxy.port(), 0);
    proxy.wait_accepted(1, WAIT).await.unwrap();
    assert_eq!(proxy.connections(), 1);
    assert_eq!(round_trip(&mut client, b"hello").await.0, b"hello");
    let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    assert_eq!(round_trip(&mut client, &big).await.0, big);

    drop(client);
    wait_connections(&proxy, 0).await;
    let mut second = TcpStream::connect(proxy.addr()).await.unwrap();
    proxy.wait_accepted(2, WAIT).await.unwrap();
    assert_eq!(proxy.accepted(), 2);
    let err = proxy
        .wait_accepted(3, Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("accepted 2 connections"), "{err}");

    drop(proxy);
    assert_eq!(read_to_end(&mut second).await, (Vec::new(), None));
}

#[tokio::test]
async fn delay_holds_each_chunk_back() {
    let (proxy, mut client) = proxied_echo().await;
    proxy.set(Fault::Delay(DELAY));
    let (back, took) = round_trip(&mut client, b"slow").await;
    assert_eq!(back, b"slow");
    // Delayed once on the way there and once on the way back.
    assert!(took >= 2 * DELAY, "round trip took {took:?}");
}

#[tokio::test]
async fn black_hole_forwards_nothing_and_keeps_connections_open() {
    let (proxy, mut client) = proxied_echo().await;
    proxy.set(Fault::BlackHole);
    client.write_all(b"lost").await.unwrap();
    assert_silent(&mut client).await;
    // New connections are still accepted, and get nothing either.
    let mut late = TcpStream::connect(proxy.addr()).await.unwrap();
    proxy.wait_accepted(2, WAIT).await.unwrap();
    late.write_all(b"lost too").await.unwrap();
    assert_silent(&mut late).await;
    assert_eq!(proxy.connections(), 2);

    // Healing: the connections were open all along; what went in meanwhile is gone.
    proxy.set(Fault::Pass);
    assert_eq!(round_trip(&mut client, b"back").await.0, b"back");
    assert_eq!(round_trip(&mut late, b"back").await.0, b"back");
}

#[tokio::test]
async fn reset_sends_rst_to_live_and_new_connections() {
    let (proxy, mut client) = proxied_echo().await;
    assert_eq!(round_trip(&mut client, b"ok").await.0, b"ok");
    proxy.set(Fault::Reset);
    assert_eq!(
        read_to_end(&mut client).await,
        (Vec::new(), Some(ErrorKind::ConnectionReset))
    );

    // A new connection is accepted and reset at once, so the RST may already be there
    // when the client's connect completes.
    match TcpStream::connect(proxy.addr()).await {
        Ok(mut late) => assert_eq!(
            read_to_end(&mut late).await,
            (Vec::new(), Some(ErrorKind::ConnectionReset))
        ),
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
    }
    proxy.wait_accepted(2, WAIT).await.unwrap();
    wait_connections(&proxy, 0).await;
}

#[tokio::test]
async fn cut_after_delivers_exactly_n_bytes_then_resets() {
    let (proxy, mut client) = proxied_echo().await;
    proxy.set(Fault::CutAfter(4321));
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    client.write_all(&data).await.unwrap();
    let (got, ended) = read_to_end(&mut client).await;
    assert_eq!(got.len(), 4321);
    assert_eq!(got, data[..4321]);
    assert_eq!(ended, Some(ErrorKind::ConnectionReset));
}

#[tokio::test]
async fn refuse_then_pass_listens_again_on_the_same_port() {
    let (proxy, mut client) = proxied_echo().await;
    assert_eq!(round_trip(&mut client, b"ok").await.0, b"ok");
    let addr = proxy.addr();

    proxy.set(Fault::Refuse);
    let refused = TcpStream::connect(addr).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
    assert_eq!(
        read_to_end(&mut client).await,
        (Vec::new(), Some(ErrorKind::ConnectionReset))
    );

    proxy.set(Fault::Pass);
    assert_eq!(proxy.addr(), addr);
    let mut again = TcpStream::connect(addr).await.unwrap();
    assert_eq!(round_trip(&mut again, b"again").await.0, b"again");
    assert_eq!(proxy.accepted(), 2);
}

#[tokio::test]
async fn faults_switch_on_a_live_connection() {
    let (proxy, mut client) = proxied_echo().await;
    assert_eq!(round_trip(&mut client, b"pass").await.0, b"pass");

    proxy.set(Fault::Delay(DELAY));
    let (back, took) = round_trip(&mut client, b"delay").await;
    assert_eq!(back, b"delay");
    assert!(took >= 2 * DELAY, "round trip took {took:?}");

    proxy.set(Fault::BlackHole);
    client.write_all(b"lost").await.unwrap();
    assert_silent(&mut client).await;

    proxy.set(Fault::Pass);
    assert_eq!(round_trip(&mut client, b"healed").await.0, b"healed");

    // The cut counts from the switch, not from the connection's start.
    proxy.set(Fault::CutAfter(3));
    client.write_all(b"0123456789").await.unwrap();
    assert_eq!(
        read_to_end(&mut client).await,
        (b"012".to_vec(), Some(ErrorKind::ConnectionReset))
    );
    assert_eq!(proxy.accepted(), 1);
    wait_connections(&proxy, 0).await;
}

#[tokio::test]
async fn imap_works_through_the_proxy_until_it_black_holes() {
    let dovecot = Dovecot::start().await.unwrap();
    let proxy = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], dovecot.port())))
        .await
        .unwrap();
    let mut imap = RawImap::connect(proxy.port(), dovecot.user(), dovecot.password())
        .await
        .unwrap();
    imap.select("INBOX").await.unwrap();
    let raw = plain_mail("through the proxy", "a literal each way\n");
    let uid = imap.append("INBOX", &[], &raw).await.unwrap();
    assert_eq!(imap.uid_fetch_body(uid).await.unwrap(), raw);
    imap.command("NOOP").await.unwrap();

    proxy.set(Fault::BlackHole);
    let start = Instant::now();
    let err = imap.command("NOOP").await.unwrap_err();
    assert!(
        start.elapsed() >= COMMAND_TIMEOUT,
        "failed after {:?}",
        start.elapsed()
    );
    assert!(format!("{err:#}").contains("timed out"), "{err:#}");
    assert_eq!(proxy.connections(), 1, "the dead link still looks open");

    proxy.set(Fault::Pass);
    let mut fresh = RawImap::connect(proxy.port(), dovecot.user(), dovecot.password())
        .await
        .unwrap();
    proxy.wait_accepted(2, WAIT).await.unwrap();
    assert_eq!(fresh.select("INBOX").await.unwrap().exists, 1);
    fresh.logout().await.unwrap();
}
