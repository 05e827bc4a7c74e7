//! [`FaultProxy`]: a loopback TCP proxy that injects network faults, standing in for
//! toxiproxy (not packaged here; see design/reliability.md G6, G10, G13).
//!
//! The proxy listens on `127.0.0.1:0` and forwards each accepted connection to one
//! upstream address. The [`Fault`] in force can be switched at any time with
//! [`FaultProxy::set`], and applies to live connections as well as new ones:
//!
//! - `Reset` and `Refuse` act at once: live connections are closed with a TCP RST
//!   (`SO_LINGER` 0). `Refuse` also closes the listening socket before `set` returns, so
//!   the next connect is refused; switching away from it listens again on the same port
//!   (`SO_REUSEADDR`), also before `set` returns unless the bind fails, in which case the
//!   proxy retries in the background.
//! - `BlackHole` acts on the next chunk either way: it is read and discarded, like
//!   toxiproxy's `timeout` toxic with timeout 0. Bytes discarded are gone for good.
//! - `Delay` and `Pass` apply to chunks read after the switch; chunks already delayed
//!   keep their due time, and order is always kept.
//! - `CutAfter(n)` counts server-to-client bytes from the later of the switch and the
//!   connection's start. The reset discards what the kernel has not yet handed to the
//!   client, so "exactly n bytes" holds while the client keeps reading (on loopback a
//!   send normally lands in the peer's receive buffer at once).
//!
//! A half-close (EOF) is passed on in every mode. Dropping the proxy stops it and closes
//! every connection.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// How long the proxy waits for the upstream to accept a connection.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause between attempts to listen again after a failed re-bind.
const REBIND_RETRY: Duration = Duration::from_millis(20);

/// Bytes asked for per socket read: one "chunk".
const CHUNK: usize = 16 * 1024;

/// What the proxy does to traffic. See the module documentation for when a switch
/// takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward both ways.
    Pass,
    /// Forward both ways, each chunk held back by this long (latency, pipelined).
    Delay(Duration),
    /// Keep accepting and keep connections open, but read and discard everything both
    /// ways: a dead link as the client sees it.
    BlackHole,
    /// Close live and new connections with RST.
    Reset,
    /// Forward this many bytes server-to-client on each connection, then reset it.
    CutAfter(usize),
    /// Stop listening (connects are refused) and reset live connections.
    Refuse,
}

impl Fault {
    /// Whether this fault ends live connections at once.
    fn kills(self) -> bool {
        matches!(self, Self::Reset | Self::Refuse)
    }
}

/// The fault in force and how many times it was set, so a connection can tell a fresh
/// `CutAfter` from the one it is already counting.
#[derive(Debug, Clone, Copy)]
struct State {
    generation: u64,
    fault: Fault,
}

/// State shared by the handle, the accept loop and the connections.
#[derive(Debug)]
struct Shared {
    /// The proxy's own address; kept across `Refuse`.
    addr: SocketAddr,
    /// Where connections are forwarded.
    upstream: SocketAddr,
    /// The listening socket; `None` while refusing or after a failed re-bind.
    listener: Mutex<Option<TcpListener>>,
    /// Why the last re-bind failed, for error messages.
    bind_error: Mutex<Option<String>>,
    fault: watch::Sender<State>,
    accepted: watch::Sender<usize>,
    open: Arc<AtomicUsize>,
    /// Registering a socket with the reactor needs a runtime context; `set` may be
    /// called from a plain thread.
    runtime: Handle,
}

impl Shared {
    fn listener(&self) -> MutexGuard<'_, Option<TcpListener>> {
        // A poisoned lock only means a test thread panicked; the data is still usable.
        self.listener.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Listens again if the fault allows it and the socket is gone; whether listening.
    /// `slot` is the locked listener, which serializes this against [`FaultProxy::set`].
    fn listen(&self, slot: &mut Option<TcpListener>) -> bool {
        if self.fault.borrow().fault == Fault::Refuse {
            return false;
        }
        if slot.is_none() {
            let _runtime = self.runtime.enter();
            let mut error = self.bind_error.lock().unwrap_or_else(|e| e.into_inner());
            match bind(self.addr) {
                Ok(listener) => {
                    *slot = Some(listener);
                    *error = None;
                }
                Err(e) => *error = Some(format!("re-binding {}: {e}", self.addr)),
            }
        }
        slot.is_some()
    }

    fn poll_accept(&self, cx: &mut TaskContext<'_>) -> Poll<io::Result<(TcpStream, SocketAddr)>> {
        // Locked per poll so that `set(Refuse)` can close the socket synchronously; the
        // accept loop is woken by the fault change, not by this socket.
        match self.listener().as_ref() {
            Some(listener) => listener.poll_accept(cx),
            None => Poll::Pending,
        }
    }
}

/// A running fault-injecting proxy; stops, closing every connection, on drop.
#[derive(Debug)]
pub struct FaultProxy {
    shared: Arc<Shared>,
    /// The accept loop; owns the connection tasks, so aborting it ends them too.
    server: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy on `127.0.0.1:0` forwarding to `upstream`, in [`Fault::Pass`].
    pub async fn start(upstream: SocketAddr) -> Result<Self> {
        let listener =
            bind(SocketAddr::from(([127, 0, 0, 1], 0))).context("binding 127.0.0.1:0")?;
        let addr = listener.local_addr().context("local_addr")?;
        let shared = Arc::new(Shared {
            addr,
            upstream,
            listener: Mutex::new(Some(listener)),
            bind_error: Mutex::new(None),
            fault: watch::Sender::new(State {
                generation: 0,
                fault: Fault::Pass,
            }),
            accepted: watch::Sender::new(0),
            open: Arc::new(AtomicUsize::new(0)),
            runtime: Handle::current(),
        });
        let server = tokio::spawn(serve(Arc::clone(&shared)));
        Ok(Self { shared, server })
    }

    /// The proxy's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.shared.addr.port()
    }

    /// The proxy's address (127.0.0.1 and [`FaultProxy::port`]).
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// Switches the fault; see the module documentation for when it takes effect.
    pub fn set(&self, fault: Fault) {
        let mut slot = self.shared.listener();
        self.shared.fault.send_modify(|state| {
            state.generation += 1;
            state.fault = fault;
        });
        if fault == Fault::Refuse {
            // Closing the socket refuses new connects and resets any still in the backlog.
            *slot = None;
        } else {
            self.shared.listen(&mut slot);
        }
    }

    /// Client connections currently open through the proxy.
    pub fn connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Client connections accepted so far, including ones reset at once.
    pub fn accepted(&self) -> usize {
        *self.shared.accepted.borrow()
    }

    /// Waits until [`FaultProxy::accepted`] is at least `n`.
    pub async fn wait_accepted(&self, n: usize, timeout: Duration) -> Result<()> {
        let mut accepted = self.shared.accepted.subscribe();
        if let Ok(reached) = tokio::time::timeout(timeout, accepted.wait_for(|&a| a >= n)).await {
            // The sender lives in `self.shared`, so the channel cannot have closed.
            reached.context("proxy stopped")?;
            return Ok(());
        }
        let bind_error = self
            .shared
            .bind_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .map(|e| format!(" (last {e})"))
            .unwrap_or_default();
        bail!(
            "proxy on port {} accepted {} connections within {timeout:?}, wanted {n}{bind_error}",
            self.port(),
            self.accepted()
        )
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.server.abort();
        self.shared.listener().take();
    }
}

/// A listening socket with `SO_REUSEADDR`, so the port can be taken again after
/// `Refuse` while its old connections linger.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// The accept loop: also re-binds after `Refuse` and reaps finished connections.
async fn serve(shared: Arc<Shared>) {
    let mut faults = shared.fault.subscribe();
    let mut connections = JoinSet::new();
    loop {
        faults.borrow_and_update();
        let listening = shared.listen(&mut shared.listener());
        let refusing = shared.fault.borrow().fault == Fault::Refuse;
        tokio::select! {
            accepted = poll_fn(|cx| shared.poll_accept(cx)), if listening => {
                // Accept errors (e.g. out of fds) are transient; the client will retry.
                let Ok((client, _)) = accepted else { continue };
                let open = Open::new(&shared.open);
                shared.accepted.send_modify(|n| *n += 1);
                connections.spawn(connection(client, shared.upstream, faults.clone(), open));
            }
            changed = faults.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(REBIND_RETRY), if !listening && !refusing => {}
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Counts an open client connection for as long as it lives.
struct Open(Arc<AtomicUsize>);

impl Open {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(count))
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The connection must end with a reset.
struct Stop;

async fn connection(
    mut client: TcpStream,
    upstream: SocketAddr,
    faults: watch::Receiver<State>,
    _open: Open,
) {
    let reset = if faults.borrow().fault.kills() {
        true
    } else if let Ok(Ok(mut server)) =
        tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, TcpStream::connect(upstream)).await
    {
        // Chunks should not wait for Nagle, or `Delay` would be measured with noise.
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (mut client_read, mut client_write) = client.split();
        let (mut server_read, mut server_write) = server.split();
        let both = async {
            tokio::try_join!(
                pump(&mut client_read, &mut server_write, faults.clone(), false),
                pump(&mut server_read, &mut client_write, faults.clone(), true),
            )
        };
        tokio::select! {
            ended = both => ended.is_err(),
            () = killed(faults.clone()) => true,
        }
    } else {
        // The upstream is down: the client sees its connection fail as it would directly.
        true
    };
    if reset {
        // Dropping the stream right after this sends RST instead of FIN.
        let _ = client.set_zero_linger();
    }
}

/// Returns once the fault is one that ends live connections (or the proxy is gone).
async fn killed(mut faults: watch::Receiver<State>) {
    let _ = faults.wait_for(|state| state.fault.kills()).await;
}

/// Forwards one direction until EOF (passed on as a half-close) or a fault that ends the
/// connection. Chunks wait in a queue for their due time, so `Delay` is latency, not a
/// throughput cap.
async fn pump<R, W>(
    from: &mut R,
    to: &mut W,
    faults: watch::Receiver<State>,
    server_to_client: bool,
) -> Result<(), Stop>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0; CHUNK];
    let mut queue: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut eof = false;
    // The `CutAfter` generation being counted and the bytes forwarded under it.
    let mut cut: Option<(u64, usize)> = None;
    loop {
        if eof && queue.is_empty() {
            let _ = to.shutdown().await;
            return Ok(());
        }
        let due = queue.front().map(|(at, _)| *at);
        tokio::select! {
            biased;
            () = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                let Some((_, data)) = queue.pop_front() else { continue };
                let state = *faults.borrow();
                let data = match state.fault {
                    Fault::BlackHole => continue,
                    Fault::Reset | Fault::Refuse => return Err(Stop),
                    Fault::CutAfter(limit) if server_to_client => {
                        let sent = match cut {
                            Some((generation, sent)) if generation == state.generation => sent,
                            _ => 0,
                        };
                        let take = limit.saturating_sub(sent).min(data.len());
                        let part = data.get(..take).unwrap_or_default();
                        to.write_all(part).await.map_err(|_| Stop)?;
                        cut = Some((state.generation, sent + take));
                        if sent + take >= limit {
                            let _ = to.flush().await;
                            return Err(Stop);
                        }
                        continue;
                    }
                    _ => data,
                };
                to.write_all(&data).await.map_err(|_| Stop)?;
            }
            read = from.read(&mut buf), if !eof => match read {
                Ok(0) => eof = true,
                Ok(n) => {
                    let delay = match faults.borrow().fault {
                        Fault::BlackHole => continue,
                        Fault::Delay(d) => d,
                        _ => Duration::ZERO,
                    };
                    let at = (Instant::now() + delay).max(queue.back().map_or(Instant::now(), |q| q.0));
                    queue.push_back((at, buf.get(..n).unwrap_or_default().to_vec()));
                }
                Err(_) => return Err(Stop),
            },
        }
    }
}
