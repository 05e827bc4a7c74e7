//! The IRC sink against a real ngIRCd on loopback (one private server per test) watched by a
//! second client that joins the channel and records what arrives; SASL against a scripted
//! server following IRCv3 (ngIRCd has no SASL). Every wait has a deadline; no fixed sleeps.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use herald_bridges::irc::{self, Irc};
use herald_testkit::{is_message_from, IrcClient, IrcLine, Ngircd, NgircdOptions};
use proptest::prelude::*;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::time::Instant;

use super::*;

const CHANNEL: &str = "#alerts";
const WAIT: Duration = Duration::from_secs(20);

/// The sink's config for `port`, with fast flood control (the default bucket's timing is
/// proven with a paused clock in the crate's unit tests) and `extra` keys on top.
fn irc_config(port: u16, extra: Value) -> SinkConfig {
    let mut table = json!({
        "server": "127.0.0.1",
        "port": port,
        "tls": false,
        "nick": "herald",
        "channels": [CHANNEL],
        "flood_burst": 10,
        "flood_interval": "20ms",
        "timeout": "20s",
    });
    for (key, value) in extra.as_object().unwrap() {
        table[key] = value.clone();
    }
    config("irc", table)
}

fn irc_sink(config: &SinkConfig) -> Irc {
    match config {
        SinkConfig::Irc(c) => Irc::new(c).unwrap(),
        _ => unreachable!(),
    }
}

fn alert(id: &str) -> Alert {
    let mut alert = Alert::sample();
    alert.title = format!("alert {id}");
    alert.summary = String::new();
    alert.body = String::new();
    alert
}

/// A server and an observer already in [`CHANNEL`] (so the observer is its operator).
async fn setup(options: NgircdOptions) -> (Ngircd, IrcClient) {
    let server = Ngircd::start_with(options).await.unwrap();
    let mut observer = IrcClient::connect(server.port(), "watcher").await.unwrap();
    observer.join(CHANNEL).await.unwrap();
    (server, observer)
}

/// Delivers like the outbox would: retries `Retry` outcomes until `Delivered` or `WAIT`.
async fn deliver_until_delivered(sink: &Irc, alert: &Alert) {
    let deadline = Instant::now() + WAIT * 2;
    loop {
        match sink.deliver_to(alert, CHANNEL).await {
            Outcome::Delivered => return,
            other => assert!(Instant::now() < deadline, "never delivered: last {other:?}"),
        }
    }
}

fn texts(lines: &[IrcLine]) -> Vec<&str> {
    lines.iter().map(IrcLine::text).collect()
}

#[tokio::test]
async fn delivers_to_a_channel_once_confirmed() {
    let (server, mut observer) = setup(NgircdOptions::default()).await;
    let sink = irc_sink(&irc_config(server.port(), json!({})));
    let mut a = Alert::sample();
    a.severity = Severity::Critical;
    let outcome = sink.deliver_to(&a, CHANNEL).await;
    assert_eq!(outcome, Outcome::Delivered);
    // Confirmed means relayed: the lines are already on their way to the observer.
    let got = observer.messages("herald", CHANNEL, 2, WAIT).await.unwrap();
    assert_eq!(got[0].command, "PRIVMSG");
    assert_eq!(
        got[0].text(),
        "\x02[CRITICAL]\x02 cron on web01.example.net: /usr/local/bin/backup.sh"
    );
    assert_eq!(
        got[1].text(),
        "backup.sh: error: cannot stat /srv/data: No such file or directory"
    );
    assert_eq!(sink.targets(), [CHANNEL]);
    assert_eq!(sink.sessions(), 1);
    // `deliver` (all targets) works the same.
    assert_eq!(sink.deliver(&alert("2")).await, Outcome::Delivered);
    observer.messages("herald", CHANNEL, 3, WAIT).await.unwrap();
    assert!(is_rejected(&sink.deliver_to(&a, "#gone").await));
    sink.close().await;
    observer
        .wait_for(WAIT, |l| l.command == "QUIT" && l.nick() == Some("herald"))
        .await
        .unwrap();
}

#[tokio::test]
async fn notice_mode_sends_notices() {
    let (server, mut observer) = setup(NgircdOptions::default()).await;
    let sink = irc_sink(&irc_config(
        server.port(),
        json!({"notice": true, "colour": true}),
    ));
    assert_eq!(
        sink.deliver_to(&alert("n"), CHANNEL).await,
        Outcome::Delivered
    );
    let got = observer.messages("herald", CHANNEL, 1, WAIT).await.unwrap();
    assert_eq!(got[0].command, "NOTICE");
    assert_eq!(got[0].text(), "\x02\x0307[WARNING]\x0F alert n");
}

#[tokio::test]
async fn channel_keys_are_used() {
    let (server, mut observer) = setup(NgircdOptions::default()).await;
    observer
        .send(&format!("MODE {CHANNEL} +k sesame"))
        .await
        .unwrap();
    observer
        .wait_for(WAIT, |l| l.command == "MODE" && l.raw.contains("+k"))
        .await
        .unwrap();
    let sink = irc_sink(&irc_config(
        server.port(),
        json!({"channels": [{"name": CHANNEL, "key": "sesame"}]}),
    ));
    assert_eq!(
        sink.deliver_to(&alert("k"), CHANNEL).await,
        Outcome::Delivered
    );
    observer.messages("herald", CHANNEL, 1, WAIT).await.unwrap();
}

#[tokio::test]
async fn tls_with_a_private_ca() {
    let (server, mut observer) = setup(NgircdOptions {
        tls: true,
        ..Default::default()
    })
    .await;
    let ca = server.ca_path().unwrap().display().to_string();
    let sink = irc_sink(&irc_config(
        server.tls_port().unwrap(),
        json!({"server": "localhost", "tls": true, "ca_file": ca}),
    ));
    assert_eq!(
        sink.deliver_to(&alert("tls"), CHANNEL).await,
        Outcome::Delivered
    );
    observer.messages("herald", CHANNEL, 1, WAIT).await.unwrap();
}

#[tokio::test]
async fn tls_refuses_an_unknown_certificate() {
    let server = Ngircd::start_with(NgircdOptions {
        tls: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let other = herald_testkit::write_unrelated_ca(server.dir()).unwrap();
    let sink = irc_sink(&irc_config(
        server.tls_port().unwrap(),
        json!({"server": "localhost", "tls": true, "ca_file": other, "timeout": "2s"}),
    ));
    let outcome = sink.deliver_to(&alert("x"), CHANNEL).await;
    assert!(is_retry(&outcome), "{outcome:?}");
    assert!(reason(&outcome).contains("TLS"), "{outcome:?}");
}

#[tokio::test]
async fn takes_another_nick_when_in_use() {
    let (server, mut observer) = setup(NgircdOptions::default()).await;
    let _squatter = IrcClient::connect(server.port(), "herald").await.unwrap();
    let sink = irc_sink(&irc_config(server.port(), json!({})));
    assert_eq!(
        sink.deliver_to(&alert("nick"), CHANNEL).await,
        Outcome::Delivered
    );
    let got = observer.messages("herald", CHANNEL, 1, WAIT).await.unwrap();
    assert_eq!(got[0].nick(), Some("herald_"));
}

#[tokio::test]
async fn rejoins_after_a_kick() {
    let (server, mut observer) = setup(NgircdOptions::default()).await;
    let sink = irc_sink(&irc_config(server.port(), json!({})));
    assert_eq!(
        sink.deliver_to(&alert("1"), CHANNEL).await,
        Outcome::Delivered
    );
    observer
        .send(&format!("KICK {CHANNEL} herald :out"))
        .await
        .unwrap();
    observer
        .wait_for(WAIT, |l| l.command == "KICK")
        .await
        .unwrap();
    observer
        .wait_for(WAIT, |l| l.command == "JOIN" && l.nick() == Some("herald"))
        .await
        .unwrap();
    assert_eq!(
        sink.deliver_to(&alert("2"), CHANNEL).await,
        Outcome::Delivered
    );
    let got = observer.messages("herald", CHANNEL, 2, WAIT).await.unwrap();
    assert_eq!(
        texts(&got),
        ["\x02[WARNING]\x02 alert 1", "\x02[WARNING]\x02 alert 2"]
    );
    assert_eq!(sink.sessions(), 1, "a kick is not a reconnect");
}

#[tokio::test]
async fn server_restart_mid_stream_loses_nothing() {
    let (mut server, mut observer) = setup(NgircdOptions::default()).await;
    let sink = Arc::new(irc_sink(&irc_config(
        server.port(),
        json!({"timeout": "5s"}),
    )));
    assert_eq!(
        sink.deliver_to(&alert("0"), CHANNEL).await,
        Outcome::Delivered
    );
    // Five alerts in flight while the server dies.
    let mut tasks = Vec::new();
    for i in 1..=5 {
        let sink = Arc::clone(&sink);
        tasks.push(tokio::spawn(async move {
            (i, sink.deliver_to(&alert(&i.to_string()), CHANNEL).await)
        }));
    }
    tokio::task::yield_now().await;
    server.kill().await.unwrap();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    // What the old observer got before the server died.
    observer.drain(Duration::from_secs(1)).await;
    let before: Vec<String> = observer
        .seen
        .iter()
        .filter(|l| is_message_from(l, "herald", CHANNEL))
        .map(|l| l.text().to_owned())
        .collect();
    for (i, outcome) in &outcomes {
        if *outcome == Outcome::Delivered {
            assert!(
                before.contains(&format!("\x02[WARNING]\x02 alert {i}")),
                "alert {i} reported delivered but never relayed"
            );
        }
    }
    server.restart().await.unwrap();
    let mut observer = IrcClient::connect(server.port(), "watcher").await.unwrap();
    observer.join(CHANNEL).await.unwrap();
    // The outbox retries what was not confirmed; the sink reconnects meanwhile.
    for (i, outcome) in &outcomes {
        if *outcome != Outcome::Delivered {
            deliver_until_delivered(&sink, &alert(&i.to_string())).await;
        }
    }
    let retried = outcomes
        .iter()
        .filter(|(_, o)| *o != Outcome::Delivered)
        .count();
    let after = observer
        .messages("herald", CHANNEL, retried, WAIT)
        .await
        .unwrap();
    let mut all: Vec<String> = before;
    all.extend(after.iter().map(|l| l.text().to_owned()));
    for i in 1..=5 {
        assert!(
            all.contains(&format!("\x02[WARNING]\x02 alert {i}")),
            "alert {i} lost: {all:?}"
        );
    }
    assert!(sink.sessions() >= 2, "reconnected");
}

#[tokio::test]
async fn mail_cannot_inject_commands() {
    let (server, mut observer) = setup(NgircdOptions::default()).await;
    observer.join("#evil").await.unwrap();
    let sink = irc_sink(&irc_config(server.port(), json!({"max_lines": 20})));
    // An RFC 2047 encoded-word subject, as the classifier decodes it.
    let payload = "Disk full\r\nQUIT :pwned\r\nJOIN #evil\r\nPART #alerts";
    let word = format!(
        "=?UTF-8?B?{}?=",
        base64::engine::general_purpose::STANDARD.encode(payload)
    );
    let decoded = {
        let b64 = word.trim_start_matches("=?UTF-8?B?").trim_end_matches("?=");
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap(),
        )
        .unwrap()
    };
    let mut a = alert("x");
    a.subject = decoded.clone();
    a.title = decoded;
    a.summary = "ok\nNICK evil\r\nMODE #alerts +o watcher".into();
    a.body = "line one\r\nPART #alerts :bye\r\n\0QUIT\nJOIN #evil\n\x01ACTION spoofs\x01\n\
              \x0304,01coloured\x03 \x02bold\x02\rKICK #alerts watcher\n"
        .into();
    assert_eq!(sink.deliver_to(&a, CHANNEL).await, Outcome::Delivered);
    // A follow-up proves herald is still connected and still in the channel.
    assert_eq!(
        sink.deliver_to(&alert("after"), CHANNEL).await,
        Outcome::Delivered
    );
    observer
        .wait_for(WAIT, |l| l.text().ends_with("alert after"))
        .await
        .unwrap();
    let from_herald: Vec<&IrcLine> = observer
        .seen
        .iter()
        .filter(|l| l.nick() == Some("herald"))
        .collect();
    assert!(from_herald.len() >= 3);
    // herald's own JOIN (seen by the observer as the channel's operator) is the only
    // non-message line it ever sent: no QUIT, PART, JOIN #evil, NICK, MODE or KICK.
    assert_eq!(
        from_herald.iter().filter(|l| l.command == "JOIN").count(),
        1
    );
    for line in &from_herald {
        if line.command == "JOIN" {
            assert_eq!(line.param(0), CHANNEL);
            continue;
        }
        assert_eq!(line.command, "PRIVMSG", "herald sent {:?}", line.raw);
        assert_eq!(line.param(0), CHANNEL);
        assert!(
            !line.text().contains(['\x01', '\x03', '\r', '\0']),
            "{:?}",
            line.raw
        );
    }
    assert!(observer
        .seen
        .iter()
        .any(|l| l.text() == "\x02[WARNING]\x02 Disk full QUIT :pwned JOIN #evil PART #alerts"));
    // A lone CR is a line break too, so "KICK …" is just another line of text.
    assert!(observer.seen.iter().any(|l| l.text() == "coloured bold"));
    assert!(observer
        .seen
        .iter()
        .any(|l| l.text() == "KICK #alerts watcher"));
    assert_eq!(sink.sessions(), 1);
}

#[tokio::test]
async fn long_non_ascii_body_splits_into_valid_lines() {
    let (server, mut observer) = setup(NgircdOptions::default()).await;
    let sink = irc_sink(&irc_config(server.port(), json!({"max_lines": 50})));
    let mut body = String::new();
    let words = [
        "日本語の",
        "テキスト",
        "Ünïcødé",
        "ẞtraße",
        "🔥🚒",
        "ελληνικά",
        "кириллица",
    ];
    let mut i = 0;
    while body.len() < 3 * 1024 {
        body.push_str(words[i % words.len()]);
        body.push('·'); // no spaces: every cut falls between two characters
        i += 1;
    }
    let mut a = alert("utf8");
    a.body = body.clone();
    assert_eq!(sink.deliver_to(&a, CHANNEL).await, Outcome::Delivered);
    observer.drain(Duration::from_millis(300)).await;
    let got: Vec<&IrcLine> = observer
        .seen
        .iter()
        .filter(|l| is_message_from(l, "herald", CHANNEL))
        .collect();
    assert!(got.len() >= 7, "3 KB in ≤ 512-byte lines: {}", got.len());
    for line in &got {
        assert!(
            line.bytes.len() <= 512,
            "{} bytes relayed",
            line.bytes.len()
        );
        assert!(std::str::from_utf8(&line.bytes).is_ok(), "invalid UTF-8");
    }
    // The real prefix is known, so lines use the room they have.
    assert!(got.iter().any(|l| l.bytes.len() > 505));
    let received: String = got.iter().skip(1).map(|l| l.text()).collect::<String>();
    assert_eq!(received, body, "the body arrives whole, in order");
}

#[tokio::test]
async fn a_burst_of_20_arrives_in_order_without_a_disconnect() {
    // ngIRCd's own flood penalties stay on here.
    let (server, mut observer) = setup(NgircdOptions {
        penalties: true,
        ..Default::default()
    })
    .await;
    let sink = Arc::new(irc_sink(&irc_config(
        server.port(),
        json!({"flood_burst": 4, "flood_interval": "250ms", "timeout": "120s"}),
    )));
    assert_eq!(
        sink.deliver_to(&alert("warm-up"), CHANNEL).await,
        Outcome::Delivered
    );
    // Submitted in order on this single-threaded runtime.
    let mut tasks = Vec::new();
    for i in 1..=20 {
        let sink = Arc::clone(&sink);
        tasks.push(tokio::spawn(async move {
            let mut a = alert(&format!("{i:02}"));
            a.summary = format!("summary of alert {i:02}");
            sink.deliver_to(&a, CHANNEL).await
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), Outcome::Delivered);
    }
    let got = observer
        .messages("herald", CHANNEL, 41, Duration::from_secs(60))
        .await
        .unwrap();
    let headers: Vec<&str> = got
        .iter()
        .map(IrcLine::text)
        .filter(|t| t.starts_with('\x02'))
        .skip(1)
        .collect();
    let expected: Vec<String> = (1..=20)
        .map(|i| format!("\x02[WARNING]\x02 alert {i:02}"))
        .collect();
    assert_eq!(headers, expected);
    assert_eq!(sink.sessions(), 1, "never disconnected");
    assert!(!observer.seen.iter().any(|l| l.command == "QUIT"));
    let log = server.log();
    assert!(
        !log.contains("Excess") && !log.contains("exhausted"),
        "{log}"
    );
}

#[tokio::test]
async fn a_digest_and_a_recovery_arrive_as_documented() {
    let (server, mut observer) = setup(NgircdOptions::default()).await;
    let sink = irc_sink(&irc_config(server.port(), json!({"max_lines": 6})));
    assert_eq!(
        sink.deliver_to(&digest_alert(12, 0), CHANNEL).await,
        Outcome::Delivered
    );
    assert_eq!(
        sink.deliver_to(&recovery_alert(), CHANNEL).await,
        Outcome::Delivered
    );
    let got = observer.messages("herald", CHANNEL, 7, WAIT).await.unwrap();
    let mut expected =
        vec!["\x02[WARNING]\x02 12 problems: cron /usr/local/bin/backup.sh".to_owned()];
    expected.extend((1..=4).map(member_line));
    expected.push("… and 8 more".into());
    expected.push(
        "\x02[RESOLVED]\x02 cron on web01.example.net: /usr/local/bin/backup.sh succeeded".into(),
    );
    assert_eq!(texts(&got), expected);
}

// ---- pure rendering: what `classify --render` shows is what is sent --------------------

/// The `lines` of `config`'s render of `alert`.
fn rendered(config: &SinkConfig, alert: &Alert) -> Vec<String> {
    config.render(alert)["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_digest_lists_its_members_within_max_lines() {
    let header = "\x02[WARNING]\x02 12 problems: cron /usr/local/bin/backup.sh";
    let all = irc_config(6667, json!({"max_lines": 20}));
    let mut expected = vec![header.to_owned()];
    expected.extend((1..=12).map(member_line));
    assert_eq!(rendered(&all, &digest_alert(12, 0)), expected);
    // The default four lines: the header, two members and how many more.
    let default = irc_config(6667, json!({}));
    assert_eq!(
        rendered(&default, &digest_alert(12, 0)),
        [
            header.to_owned(),
            member_line(1),
            member_line(2),
            "… and 10 more".into()
        ]
    );
}

#[test]
fn a_recovery_is_one_resolved_line() {
    let mut alert = recovery_alert();
    alert.body = "line 1\nline 2\nline 3\n".into();
    let config = irc_config(6667, json!({"colour": true, "max_lines": 10}));
    assert_eq!(
        rendered(&config, &alert),
        ["\x02\x0303[RESOLVED]\x0F cron on web01.example.net: /usr/local/bin/backup.sh succeeded"]
    );
}

#[test]
fn a_hostile_digest_fits_and_cannot_inject() {
    let who = irc::lines::Identity {
        nick: format!("herald{}", "_".repeat(irc::conn::NICK_SUFFIX_BYTES)),
        user: None,
        host: None,
        userlen: Some(irc::lines::DEFAULT_USERLEN),
    };
    let budget = irc::lines::budget(&who, "PRIVMSG", CHANNEL);
    for max_lines in [2, 4, 100] {
        let config = irc_config(6667, json!({"max_lines": max_lines}));
        let lines = rendered(&config, &hostile_digest());
        assert_eq!(lines.len(), max_lines.min(52), "{lines:?}");
        for (i, line) in lines.iter().enumerate() {
            assert!(
                !line.is_empty() && line.len() <= budget,
                "{} > {budget}",
                line.len()
            );
            let ours = |c: char| i == 0 && c == '\x02';
            assert!(
                !line.chars().any(|c| c.is_control() && !ours(c)),
                "{line:?}"
            );
        }
        let last = lines.last().unwrap();
        let more = more_count(last).unwrap();
        assert_eq!(lines.len() as u64 - 2 + more, 250, "{last}");
    }
}

// ---- SASL against a scripted IRCv3 server -------------------------------------------------

/// What the scripted server saw, and how it answered.
/// Returns the listener too, so that a reconnect finds a port that accepts but never answers
/// (the outcome's reason then stays the SASL failure).
async fn scripted_sasl_server(listener: TcpListener, succeed: bool) -> (Vec<String>, TcpListener) {
    let (stream, _) = listener.accept().await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut seen = Vec::new();
    while let Ok(Ok(Some(line))) = tokio::time::timeout(WAIT, lines.next_line()).await {
        seen.push(line.clone());
        let reply: Vec<String> = match line.as_str() {
            "CAP LS 302" => vec![
                ":irc.test CAP * LS * :multi-prefix extended-join".into(),
                ":irc.test CAP * LS :server-time sasl=PLAIN,EXTERNAL".into(),
            ],
            "CAP REQ :sasl" => vec![":irc.test CAP * ACK :sasl".into()],
            "AUTHENTICATE PLAIN" => vec!["AUTHENTICATE +".into()],
            l if l.starts_with("AUTHENTICATE ") => {
                let b64 = l.trim_start_matches("AUTHENTICATE ");
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .unwrap();
                let ok = succeed && raw == b"\0bot-account\0s3cret pass";
                if ok {
                    vec![
                        ":irc.test 900 herald herald!herald@host bot-account :You are now logged in as bot-account".into(),
                        ":irc.test 903 herald :SASL authentication successful".into(),
                    ]
                } else {
                    vec![":irc.test 904 herald :SASL authentication failed".into()]
                }
            }
            "CAP END" => vec![
                ":irc.test 001 herald :Welcome to the test network herald!~herald@sasl.host".into(),
            ],
            l if l.starts_with("JOIN ") => {
                vec![format!(":herald!~herald@sasl.host JOIN {CHANNEL}")]
            }
            l if l.starts_with("PING ") => {
                vec![format!(
                    ":irc.test PONG irc.test :{}",
                    l.trim_start_matches("PING :")
                )]
            }
            _ => vec![],
        };
        for r in reply {
            write
                .write_all(format!("{r}\r\n").as_bytes())
                .await
                .unwrap();
        }
        if line.starts_with("PING ") {
            break;
        }
    }
    (seen, listener)
}

#[tokio::test]
async fn sasl_plain_via_cap_negotiation() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = tokio::spawn(scripted_sasl_server(listener, true));
    let sink = irc_sink(&irc_config(
        port,
        json!({"sasl_username": "bot-account", "sasl_password": "s3cret pass"}),
    ));
    assert_eq!(
        sink.deliver_to(&alert("sasl"), CHANNEL).await,
        Outcome::Delivered
    );
    let (seen, _listener) = script.await.unwrap();
    let pos = |prefix: &str| {
        seen.iter()
            .position(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {seen:?}"))
    };
    // Order from reference/sinks.md §5.1–5.2 [V3-CAP], [V3-SASL].
    assert_eq!(seen[0], "CAP LS 302");
    assert!(pos("NICK herald") < pos("CAP REQ :sasl"));
    assert!(pos("USER herald 0 * :") < pos("CAP REQ :sasl"));
    assert!(pos("CAP REQ :sasl") < pos("AUTHENTICATE PLAIN"));
    assert!(pos("AUTHENTICATE PLAIN") < pos("AUTHENTICATE AGJvdC1"));
    assert!(pos("AUTHENTICATE AGJvdC1") < pos("CAP END"));
    assert!(pos("CAP END") < pos("JOIN #alerts"));
    assert!(pos("JOIN #alerts") < pos("PRIVMSG #alerts :"));
    assert!(pos("PRIVMSG #alerts :") < pos("PING "));
}

#[tokio::test]
async fn sasl_failure_never_registers() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = tokio::spawn(scripted_sasl_server(listener, false));
    let sink = irc_sink(&irc_config(
        port,
        json!({"sasl_username": "bot-account", "sasl_password": "wrong", "timeout": "2s"}),
    ));
    let outcome = sink.deliver_to(&alert("sasl"), CHANNEL).await;
    assert!(is_retry(&outcome), "{outcome:?}");
    assert!(reason(&outcome).contains("904"), "{outcome:?}");
    assert!(!reason(&outcome).contains("wrong"));
    drop(sink);
    let (seen, _listener) = script.await.unwrap();
    assert!(!seen.iter().any(|l| l == "CAP END"), "{seen:?}");
    assert!(!seen.iter().any(|l| l.starts_with("JOIN")), "{seen:?}");
}

// ---- pure properties --------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// G5 for IRC: whatever the mail, every text fits its budget, is non-empty, has no
    /// control character but herald's own formatting, and there are at most `max_lines`.
    #[test]
    fn rendered_lines_fit(
        title in "\\PC{0,300}",
        body in proptest::collection::vec(any::<char>(), 0..3000),
        budget in 40usize..450,
        max_lines in 2usize..12,
    ) {
        let mut a = Alert::sample();
        a.title = title;
        a.body = body.into_iter().collect();
        let style = irc::lines::Style { notice: false, colour: true, max_lines };
        let texts = irc::lines::render(&a, style, budget);
        prop_assert!(!texts.is_empty() && texts.len() <= max_lines);
        for (i, text) in texts.iter().enumerate() {
            prop_assert!(!text.is_empty() && text.len() <= budget, "{} > {budget}", text.len());
            let allowed = |c: char| i == 0 && matches!(c, '\x02' | '\x03' | '\x0F');
            prop_assert!(!text.chars().any(|c| c.is_control() && !allowed(c)), "{text:?}");
        }
    }
}
