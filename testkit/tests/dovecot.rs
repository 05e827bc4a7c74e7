//! A real private Dovecot: mail goes in over IMAP and is seen over IMAP, IDLE reports it,
//! restarts keep it, and no Dovecot process outlives its instance.

use std::time::{Duration, Instant};

use herald_testkit::{cron_mail, plain_mail, process_group_members, Dovecot, RawImap};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn appended_mail_is_visible_over_imap() {
    let dovecot = Dovecot::start().await.unwrap();
    assert_eq!(dovecot.tls_port(), None);
    assert_eq!(dovecot.ca_path(), None);
    let raw = cron_mail(
        "web1.example.com",
        "root",
        "/usr/local/bin/backup",
        "disk full\n",
    );
    let uid = dovecot.append("INBOX", &raw).await.unwrap();
    assert_eq!(uid, 1);

    let mut imap = RawImap::connect(dovecot.port(), dovecot.user(), dovecot.password())
        .await
        .unwrap();
    let selected = imap.select("INBOX").await.unwrap();
    assert_eq!(selected.exists, 1);
    assert_eq!(selected.uidnext, 2);
    assert_eq!(imap.uid_search("ALL").await.unwrap(), vec![uid]);
    assert_eq!(imap.uid_fetch_body(uid).await.unwrap(), raw);
    // BODY.PEEK[] must not have marked it read.
    assert!(!imap
        .uid_flags(uid)
        .await
        .unwrap()
        .contains(&"\\Seen".to_owned()));
    let lines = imap
        .command(&format!("UID FETCH {uid} (ENVELOPE)"))
        .await
        .unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("Cron <root@web1> /usr/local/bin/backup")),
        "{lines:?}"
    );
    // NO is an error and leaves the connection usable.
    assert!(imap.command("SELECT \"No such box\"").await.is_err());
    assert_eq!(imap.select("INBOX").await.unwrap().exists, 1);
    imap.logout().await.unwrap();

    let seen = dovecot
        .append_flagged("INBOX", &["\\Seen"], &plain_mail("hello", "body"))
        .await
        .unwrap();
    assert_eq!(dovecot.uids("INBOX").await.unwrap(), vec![uid, seen]);
    assert_eq!(
        dovecot.flags("INBOX", uid).await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(
        dovecot.flags("INBOX", seen).await.unwrap(),
        vec!["\\Seen".to_owned()]
    );
    assert!(
        dovecot.log().contains("Login: user=<herald>"),
        "{}",
        dovecot.log()
    );
}

#[tokio::test]
async fn mailboxes_can_be_created_and_recreated() {
    let dovecot = Dovecot::start().await.unwrap();
    dovecot.create_mailbox("Alerts").await.unwrap();
    let uid = dovecot
        .append("Alerts", &plain_mail("a", "b"))
        .await
        .unwrap();
    assert_eq!(dovecot.uids("Alerts").await.unwrap(), vec![uid]);
    let before = dovecot.uidvalidity("Alerts").await.unwrap();
    dovecot.delete_mailbox("Alerts").await.unwrap();
    assert!(dovecot.uids("Alerts").await.is_err());
    dovecot.create_mailbox("Alerts").await.unwrap();
    assert_eq!(dovecot.uids("Alerts").await.unwrap(), Vec::<u32>::new());
    assert_ne!(dovecot.uidvalidity("Alerts").await.unwrap(), before);
    assert!(dovecot.append("Missing", b"x").await.is_err());
}

#[tokio::test]
async fn idle_sees_append_from_another_connection() {
    let dovecot = Dovecot::start().await.unwrap();
    let mut imap = dovecot.connect().await.unwrap();
    assert_eq!(imap.select("INBOX").await.unwrap().exists, 0);

    let mut appender = dovecot.connect().await.unwrap();
    imap.idle_start().await.unwrap();
    // Nothing happened yet: the wait times out and the IDLE stays usable.
    assert!(imap
        .idle_wait_exists(Duration::from_millis(100))
        .await
        .is_err());
    appender
        .append("INBOX", &[], &plain_mail("first", "x"))
        .await
        .unwrap();
    // The tagged OK of the APPEND has just been read: the message is stored.
    let appended = Instant::now();
    let (exists, at) = imap.idle_wait_exists(WAIT).await.unwrap();
    imap.idle_done().await.unwrap();
    let latency = at - appended;
    println!("Dovecot IDLE latency after APPEND: {latency:?}");
    assert_eq!(exists, 1);
    assert!(latency < Duration::from_secs(5), "{latency:?}");

    // The combined form, with the APPEND racing from another task.
    let port = dovecot.port();
    let appender = tokio::spawn(async move {
        let mut other = RawImap::connect(port, "herald", "secret").await.unwrap();
        other
            .append("INBOX", &[], &plain_mail("second", "y"))
            .await
            .unwrap()
    });
    let (exists, _) = imap.idle_until_exists(WAIT).await.unwrap();
    assert_eq!(exists, 2);
    assert_eq!(appender.await.unwrap(), 2);
    // The session is usable after IDLE.
    assert_eq!(imap.uid_search("ALL").await.unwrap(), vec![1, 2]);
}

#[tokio::test]
async fn many_simultaneous_connections_are_allowed() {
    let dovecot = Dovecot::start().await.unwrap();
    // Dovecot's default limit is 10 per user and IP.
    let mut connections = Vec::new();
    for _ in 0..20 {
        connections.push(dovecot.connect().await.unwrap());
    }
    for imap in &mut connections {
        imap.select("INBOX").await.unwrap();
    }
}

#[tokio::test]
async fn restart_keeps_ports_and_mail_and_says_bye() {
    let mut dovecot = Dovecot::start().await.unwrap();
    let uid = dovecot
        .append("INBOX", &plain_mail("keep", "me"))
        .await
        .unwrap();
    let validity = dovecot.uidvalidity("INBOX").await.unwrap();
    let (port, pid) = (dovecot.port(), dovecot.pid().unwrap());

    let mut idler = dovecot.connect().await.unwrap();
    idler.select("INBOX").await.unwrap();
    idler.idle_start().await.unwrap();

    let started = Instant::now();
    dovecot.restart().await.unwrap();
    println!("Dovecot restart took {:?}", started.elapsed());
    // The old session was told the server is going away.
    let error = idler.idle_wait_exists(WAIT).await.unwrap_err();
    assert!(format!("{error:#}").contains("BYE"), "{error:#}");

    assert_eq!(dovecot.port(), port);
    assert_ne!(dovecot.pid().unwrap(), pid);
    assert!(process_group_members(pid).is_empty());
    assert_eq!(dovecot.uids("INBOX").await.unwrap(), vec![uid]);
    assert_eq!(dovecot.uidvalidity("INBOX").await.unwrap(), validity);
}

#[tokio::test]
async fn stop_and_drop_leave_no_dovecot_processes() {
    let mut dovecot = Dovecot::start().await.unwrap();
    let imap = dovecot.connect().await.unwrap();
    let pid = dovecot.pid().unwrap();
    let dir = dovecot.dir().to_owned();
    let port = dovecot.port();
    // Master plus its children (log, config, anvil, auth, imap-login, imap).
    let members = process_group_members(pid);
    assert!(members.len() >= 5, "{members:?}");
    assert_eq!(instances_in(&dir), vec![pid]);

    dovecot.stop().await.unwrap();
    assert!(process_group_members(pid).is_empty());
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err());
    dovecot.stop().await.unwrap(); // idempotent
    drop(imap);

    dovecot.restart().await.unwrap();
    let pid = dovecot.pid().unwrap();
    let _imap = dovecot.connect().await.unwrap();
    assert!(process_group_members(pid).len() >= 5);
    drop(dovecot);
    assert!(
        process_group_members(pid).is_empty(),
        "{:?}",
        process_group_members(pid)
    );
    assert!(instances_in(&dir).is_empty());
    assert!(!dir.exists());
}

#[tokio::test]
async fn drop_cleans_up_after_a_master_that_died() {
    let dovecot = Dovecot::start().await.unwrap();
    let mut imap = dovecot.connect().await.unwrap();
    imap.select("INBOX").await.unwrap();
    let pid = dovecot.pid().unwrap();
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + WAIT;
    while process_group_members(pid).contains(&pid) {
        assert!(Instant::now() < deadline, "master survived SIGKILL");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Without its master, Dovecot 2.3 keeps children (the session's imap among them)
    // running and serving: only killing the whole group cleans up.
    assert!(!process_group_members(pid).is_empty());
    assert_eq!(imap.uid_search("ALL").await.unwrap(), Vec::<u32>::new());
    drop(dovecot);
    assert!(
        process_group_members(pid).is_empty(),
        "{:?}",
        process_group_members(pid)
    );
}

/// Pids of live processes whose command line mentions `dir` (only the master does; its
/// children rename themselves to `dovecot/<service>`).
fn instances_in(dir: &std::path::Path) -> Vec<u32> {
    let needle = dir.to_str().unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}
