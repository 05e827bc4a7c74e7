//! reliability.md G7 against a scripted IMAP server: no mail is missed between FETCH and
//! IDLE or across reconnects, and the odd answers servers give cause no repeats and no loops.
//!
//! The server below speaks just enough IMAP4rev1 for herald, records every command, and keeps
//! an in-memory mailbox the test changes. The cases:
//! 1. `* 5 EXISTS` in the same write as the completion of the command before IDLE, never
//!    repeated during IDLE: the message is still fetched.
//! 2. Mail that arrived while herald was down is reported only by SELECT's EXISTS, never by
//!    IDLE: it is fetched.
//! 3. `UID FETCH 10:*` answered with UID 9 (RFC 3501 `*`): UID 9 is not alerted twice.
//! 4. The message at UIDNEXT-1 is expunged before herald fetches it: no error loop, and later
//!    mail is delivered.
//!
//! Each case also proves herald did not busy-loop (a bounded command count, quiet in IDLE) and
//! did not reconnect.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{start_herald, write_config, Imap, DEADLINE};
use herald_testkit::{plain_mail, HeraldProcess, Receiver};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// More commands than any case needs; a busy loop exceeds it at once.
const MAX_COMMANDS: usize = 50;

/// Where an arrival's `* n EXISTS` goes relative to the completion it rides on.
#[derive(Debug, Clone, Copy)]
enum Place {
    /// Before the tagged OK (before `+ idling` for IDLE).
    BeforeOk,
    /// After the tagged OK.
    AfterOk,
}

/// A message that appears while the next command starting with `on` runs, announced once in
/// the same write as that command's completion.
#[derive(Debug)]
struct Arrival {
    on: &'static str,
    subject: &'static str,
    place: Place,
}

/// The mailbox and the script, shared by the test and the connections.
#[derive(Debug, Default)]
struct State {
    uidnext: u32,
    /// uid → (raw message, \Seen).
    messages: BTreeMap<u32, (Vec<u8>, bool)>,
    /// Every command received, without its tag.
    commands: Vec<String>,
    /// IDLE never reports anything.
    idle_silent: bool,
    arrival: Option<Arrival>,
    /// Expunged (`* n EXPUNGE`) at the start of the next UID FETCH.
    expunge_on_fetch: Option<u32>,
}

impl State {
    fn add(&mut self, subject: &str, seen: bool) -> u32 {
        let uid = self.uidnext;
        self.uidnext += 1;
        self.messages
            .insert(uid, (plain_mail(subject, "x\n"), seen));
        uid
    }

    fn exists(&self) -> usize {
        self.messages.len()
    }

    /// The UIDs in `set`, with `*` the highest UID (RFC 3501 §6.4.8: `n:*` always includes
    /// the last message, even below n).
    fn in_set(&self, set: &str) -> Vec<u32> {
        let max = self.messages.keys().last().copied().unwrap_or(0);
        let bound = |b: &str| if b == "*" { max } else { b.parse().unwrap() };
        let ranges: Vec<(u32, u32)> = set
            .split(',')
            .map(|part| match part.split_once(':') {
                Some((a, b)) => (bound(a).min(bound(b)), bound(a).max(bound(b))),
                None => (bound(part), bound(part)),
            })
            .collect();
        self.messages
            .keys()
            .copied()
            .filter(|uid| ranges.iter().any(|(a, b)| (a..=b).contains(&uid)))
            .collect()
    }

    fn seq(&self, uid: u32) -> usize {
        self.messages.keys().position(|&u| u == uid).unwrap() + 1
    }

    /// The answer to one command; `known` is the EXISTS count the client has been told.
    fn respond(&mut self, tag: &str, command: &str, known: &mut usize) -> Reply {
        self.commands.push(command.to_owned());
        let upper = command.to_ascii_uppercase();
        let words: Vec<&str> = command.split(' ').collect();
        let mut data = Vec::new();
        if upper.starts_with("UID FETCH") {
            if let Some(uid) = self.expunge_on_fetch.take() {
                data.extend(format!("* {} EXPUNGE\r\n", self.seq(uid)).bytes());
                self.messages.remove(&uid);
                *known -= 1;
            }
        }
        let arrival = self.arrival.take_if(|a| upper.starts_with(a.on));
        match words[0].to_ascii_uppercase().as_str() {
            "CAPABILITY" => data.extend(b"* CAPABILITY IMAP4rev1 IDLE UIDPLUS\r\n"),
            "LOGIN" | "NOOP" => {}
            "SELECT" => {
                *known = self.exists();
                data.extend(
                    format!(
                        "* FLAGS (\\Seen \\Deleted)\r\n* {} EXISTS\r\n* 0 RECENT\r\n\
                         * OK [UIDVALIDITY 7] ok\r\n* OK [UIDNEXT {}] ok\r\n",
                        self.exists(),
                        self.uidnext
                    )
                    .bytes(),
                );
            }
            "UID" if upper.starts_with("UID SEARCH") => {
                // Only UNSEEN matters: every message here is younger than the window.
                let unseen: String = (self.messages.iter())
                    .filter(|(_, (_, seen))| !seen)
                    .map(|(uid, _)| format!(" {uid}"))
                    .collect();
                data.extend(format!("* SEARCH{unseen}\r\n").bytes());
            }
            "UID" if upper.starts_with("UID FETCH") => {
                for uid in self.in_set(words[2]) {
                    let seq = self.seq(uid);
                    if upper.contains("INTERNALDATE") {
                        let date = chrono::Utc::now().format("%d-%b-%Y %H:%M:%S +0000");
                        data.extend(
                            format!("* {seq} FETCH (UID {uid} INTERNALDATE \"{date}\")\r\n")
                                .bytes(),
                        );
                    } else {
                        let raw = &self.messages[&uid].0;
                        let n = raw.len();
                        data.extend(
                            format!(
                                "* {seq} FETCH (UID {uid} RFC822.SIZE {n} BODY[]<0> {{{n}}}\r\n"
                            )
                            .bytes(),
                        );
                        data.extend(raw);
                        data.extend(b")\r\n");
                    }
                }
            }
            "UID" if upper.starts_with("UID STORE") => {
                for uid in self.in_set(words[2]) {
                    if upper.contains("\\SEEN") {
                        self.messages.get_mut(&uid).unwrap().1 = true;
                    }
                }
            }
            "IDLE" => {}
            "LOGOUT" => return Reply::Logout(format!("* BYE\r\n{tag} OK bye\r\n").into()),
            _ => return Reply::Write(format!("{tag} BAD unknown command\r\n").into()),
        }
        let mut after = Vec::new();
        if let Some(arrival) = arrival {
            self.add(arrival.subject, false);
            *known = self.exists();
            let line = format!("* {known} EXISTS\r\n");
            match arrival.place {
                Place::BeforeOk => data.extend(line.bytes()),
                Place::AfterOk => after.extend(line.bytes()),
            }
        }
        if words[0].eq_ignore_ascii_case("IDLE") {
            data.extend(b"+ idling\r\n");
            data.extend(after);
            return Reply::Idle(data);
        }
        data.extend(format!("{tag} OK done\r\n").bytes());
        data.extend(after);
        Reply::Write(data)
    }
}

/// What a connection does with an answer.
enum Reply {
    Write(Vec<u8>),
    /// Write, then idle until DONE.
    Idle(Vec<u8>),
    /// Write, then close.
    Logout(Vec<u8>),
}

/// The scripted server: a loopback listener and the shared state.
#[derive(Clone)]
struct FakeImap {
    port: u16,
    state: Arc<Mutex<State>>,
    /// Bumped whenever the test adds mail, to wake idling connections.
    changed: watch::Sender<u64>,
}

impl FakeImap {
    async fn start() -> FakeImap {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = FakeImap {
            port: listener.local_addr().unwrap().port(),
            state: Arc::new(Mutex::new(State {
                uidnext: 1,
                ..State::default()
            })),
            changed: watch::Sender::new(0),
        };
        let accepting = server.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(accepting.clone().serve(stream));
            }
        });
        server
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    /// Adds a message and wakes idling connections (which report it unless `idle_silent`).
    fn append(&self, subject: &str) -> u32 {
        let uid = self.with(|s| s.add(subject, false));
        self.changed.send_modify(|n| *n += 1);
        uid
    }

    fn commands(&self) -> Vec<String> {
        self.with(|s| s.commands.clone())
    }

    async fn serve(self, stream: TcpStream) -> std::io::Result<()> {
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        let mut changed = self.changed.subscribe();
        let mut known = 0;
        write
            .write_all(b"* OK [CAPABILITY IMAP4rev1 IDLE UIDPLUS] ready\r\n")
            .await?;
        while let Some(line) = lines.next_line().await? {
            let (tag, command) = line.split_once(' ').unwrap_or((&line, ""));
            match self.with(|s| s.respond(tag, command, &mut known)) {
                Reply::Write(data) => write.write_all(&data).await?,
                Reply::Logout(data) => return write.write_all(&data).await,
                Reply::Idle(data) => {
                    write.write_all(&data).await?;
                    changed.borrow_and_update();
                    loop {
                        let news = self.with(|s| {
                            (!s.idle_silent && s.exists() != known).then(|| {
                                known = s.exists();
                                format!("* {known} EXISTS\r\n")
                            })
                        });
                        if let Some(news) = news {
                            write.write_all(news.as_bytes()).await?;
                        }
                        tokio::select! {
                            done = lines.next_line() => {
                                let done = done?.unwrap_or_default();
                                self.with(|s| s.commands.push(done));
                                write.write_all(format!("{tag} OK idle done\r\n").as_bytes()).await?;
                                break;
                            }
                            _ = changed.changed() => {}
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// A scripted server, a webhook receiver and herald's configuration and state.
struct Env {
    server: FakeImap,
    receiver: Receiver,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Env {
    /// `seen` already-read messages in the mailbox, which the first start takes as baseline.
    async fn new(seen: usize) -> Env {
        let server = FakeImap::start().await;
        for i in 0..seen {
            server.with(|s| s.add(&format!("old {i}"), true));
        }
        let receiver = Receiver::start().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let imap = Imap {
            tls: "none",
            port: server.port,
            ca_file: None,
            extra: "timeout = \"10s\"\n".into(),
        };
        let config = write_config(dir.path(), dir.path(), &imap, &receiver);
        Env {
            server,
            receiver,
            config,
            _dir: dir,
        }
    }

    /// Waits for `what` to hold, polling, up to the deadline.
    async fn wait(&self, herald: &HeraldProcess, what: &str, check: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while !check() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}\ncommands: {:#?}\ndelivered: {:?}\n{}",
                self.server.commands(),
                self.delivered(),
                herald.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until herald has sent its `n`th IDLE and is idling in it.
    async fn wait_idle(&self, herald: &HeraldProcess, n: usize) {
        self.wait(herald, &format!("IDLE #{n}"), || {
            let commands = self.server.commands();
            commands.iter().filter(|c| *c == "IDLE").count() >= n
                && commands.last().is_some_and(|c| c == "IDLE")
        })
        .await;
    }

    /// Alerts received per title.
    fn delivered(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for r in self.receiver.received() {
            let title = r.body["title"].as_str().unwrap_or_default().to_owned();
            *counts.entry(title).or_insert(0) += 1;
        }
        counts
    }

    /// Waits for every title in `expected`, then for herald to settle in IDLE, and checks it
    /// stays there: exactly `expected` delivered, few commands, no reconnect.
    async fn settle(&self, herald: &HeraldProcess, expected: &[&str]) {
        self.wait(herald, &format!("alerts {expected:?}"), || {
            let delivered = self.delivered();
            expected.iter().all(|t| delivered.contains_key(*t))
        })
        .await;
        self.wait(herald, "IDLE", || {
            self.server.commands().last().is_some_and(|c| c == "IDLE")
        })
        .await;
        let before = self.server.commands().len();
        // Not waiting for something to happen: checking that nothing does.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let commands = self.server.commands();
        assert_eq!(commands.len(), before, "not quiet in IDLE: {commands:#?}");
        assert!(commands.len() < MAX_COMMANDS, "busy loop: {commands:#?}");
        let want: HashMap<String, usize> = expected.iter().map(|t| (t.to_string(), 1)).collect();
        assert_eq!(self.delivered(), want, "commands: {commands:#?}");
        assert!(
            !herald.stderr().contains("IMAP session failed"),
            "{}",
            herald.stderr()
        );
    }

    /// Stops herald gracefully (DONE, LOGOUT).
    async fn stop(&self, mut herald: HeraldProcess) {
        herald.sigterm().unwrap();
        let status = herald.wait_exit(DEADLINE).await.unwrap();
        assert!(status.success(), "{}", herald.stderr());
    }
}

/// Case 1: the EXISTS rides on the FETCH or STORE completion and is never repeated in IDLE.
async fn arrival_with_completion(on: &'static str, place: Place) {
    let env = Env::new(3).await;
    let herald = start_herald(&env.config).await;
    env.wait_idle(&herald, 1).await;
    env.server.with(|s| {
        s.arrival = Some(Arrival {
            on,
            subject: "arrived with completion",
            place,
        })
    });
    // UID 4 wakes herald (`* 4 EXISTS` in IDLE); its FETCH or STORE brings UID 5.
    env.server.append("wakes herald");
    env.settle(&herald, &["wakes herald", "arrived with completion"])
        .await;
    assert!(
        env.server
            .commands()
            .iter()
            .any(|c| c.starts_with("UID FETCH 5:*")),
        "{on} {place:?}"
    );
}

#[tokio::test]
async fn exists_before_the_fetch_completion_is_fetched() {
    arrival_with_completion("UID FETCH", Place::BeforeOk).await;
}

#[tokio::test]
async fn exists_before_the_store_completion_just_before_idle_is_fetched() {
    arrival_with_completion("UID STORE", Place::BeforeOk).await;
}

#[tokio::test]
async fn exists_after_the_fetch_completion_is_fetched() {
    arrival_with_completion("UID FETCH", Place::AfterOk).await;
}

#[tokio::test]
async fn exists_after_the_store_completion_just_before_idle_is_fetched() {
    arrival_with_completion("UID STORE", Place::AfterOk).await;
}

#[tokio::test]
async fn exists_before_the_idle_continuation_is_fetched() {
    arrival_with_completion("IDLE", Place::BeforeOk).await;
}

/// Case 2.
#[tokio::test]
async fn mail_that_arrived_while_down_is_fetched_though_idle_never_reports_it() {
    let env = Env::new(2).await;
    env.server.with(|s| s.idle_silent = true);
    let herald = start_herald(&env.config).await;
    env.wait_idle(&herald, 1).await;
    env.stop(herald).await;
    env.server.append("arrived while down");
    let herald = start_herald(&env.config).await;
    env.settle(&herald, &["arrived while down"]).await;
    assert!(
        !herald.stderr().contains("First start"),
        "{}",
        herald.stderr()
    );
}

/// Case 3, on a first start (backlog) and again after a restart (stored cursor).
#[tokio::test]
async fn uid_fetch_n_star_answered_with_a_lower_uid_does_not_repeat_it() {
    let env = Env::new(0).await;
    env.server.with(|s| s.uidnext = 9);
    env.server.append("uid nine");
    let herald = start_herald(&env.config).await;
    env.settle(&herald, &["uid nine"]).await;
    env.stop(herald).await;
    let herald = start_herald(&env.config).await;
    env.wait_idle(&herald, 2).await;
    env.server.append("uid ten");
    env.settle(&herald, &["uid nine", "uid ten"]).await;
    let star = env.server.commands();
    let star = star.iter().filter(|c| c.starts_with("UID FETCH 10:*"));
    // Twice answered with UID 9 alone (after the backlog, after the restart), then with 10.
    assert_eq!(star.count(), 3, "{:#?}", env.server.commands());
}

/// Case 4: UIDNEXT-1 expunged while herald was down, then a message announced in IDLE but
/// expunged before herald fetches it.
#[tokio::test]
async fn an_expunged_message_at_uidnext_minus_one_causes_no_error_loop() {
    let env = Env::new(3).await;
    let herald = start_herald(&env.config).await;
    env.wait_idle(&herald, 1).await;
    env.stop(herald).await;
    env.server.append("before the gap");
    let gone = env.server.append("expunged while down");
    env.server.with(|s| s.messages.remove(&gone));
    let herald = start_herald(&env.config).await;
    env.settle(&herald, &["before the gap"]).await;

    let idles = env
        .server
        .commands()
        .iter()
        .filter(|c| *c == "IDLE")
        .count();
    let uid = env.server.with(|s| s.uidnext);
    env.server.with(|s| s.expunge_on_fetch = Some(uid));
    env.server.append("expunged before fetch");
    env.wait_idle(&herald, idles + 1).await;
    env.server.append("after the gap");
    env.settle(&herald, &["before the gap", "after the gap"])
        .await;
}
