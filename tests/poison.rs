//! A poison message end to end: a message Dovecot cannot read is skipped after a bounded
//! number of attempts, one alert names it, `/readyz` and `/metrics` show it, and the mail
//! around it is delivered.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{start_herald, wait_for_flags, write_config, Imap, DEADLINE};
use herald_testkit::{plain_mail, Dovecot, Receiver};

/// Delivered (HTTP 200) alert titles, in order.
fn titles(receiver: &Receiver) -> Vec<String> {
    receiver
        .received()
        .into_iter()
        .filter(|r| r.status == 200)
        .map(|r| r.body["title"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn an_unreadable_message_is_skipped_named_once_and_the_rest_flows() {
    let dovecot = Dovecot::start().await.expect("dovecot");
    let receiver = Receiver::start().await.expect("receiver");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = herald_testkit::free_port();
    let path = write_config(dir.path(), dir.path(), &Imap::plain(&dovecot), &receiver);
    let text = std::fs::read_to_string(&path).expect("config").replace(
        "[defaults]",
        &format!("[server]\nlisten = \"127.0.0.1:{port}\"\n\n[defaults]"),
    );
    std::fs::write(&path, text).expect("config");

    for subject in ["before the poison", "the poison", "after the poison"] {
        dovecot
            .append("INBOX", &plain_mail(subject, "x\n"))
            .await
            .expect("append");
    }
    // Dovecot's mail processes run as `nobody` (the testkit's userdb; Dovecot refuses to
    // access mail as root), so a mode-000 file is unreadable to them even when the test runs
    // as root. Dovecot then answers the FETCH of UID 2 with what its index knows
    // (`* 2 FETCH (UID 2 RFC822.SIZE 43)`, no body), `* BYE FETCH failed: Internal error
    // occurred` and a disconnect (its default `imap_fetch_failure = disconnect-immediately`).
    let poison = dovecot.inbox_file(2).expect("the Maildir file of UID 2");
    std::fs::set_permissions(&poison, std::fs::Permissions::from_mode(0o000)).expect("chmod");

    let herald = start_herald(&path).await;
    let notice = "herald could not read message UID 2 in default/INBOX";
    let deadline = tokio::time::Instant::now() + DEADLINE * 2;
    loop {
        let got = titles(&receiver);
        if ["before the poison", "after the poison", notice]
            .iter()
            .all(|t| got.iter().any(|g| g == t))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "delivered {got:?}\n{}",
            herald.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The mail around it is marked processed; the poison is left for a person to find.
    wait_for_flags(&dovecot, 3, |f| f.iter().any(|f| f == "\\Seen")).await;
    wait_for_flags(&dovecot, 1, |f| f.iter().any(|f| f == "\\Seen")).await;

    let client = reqwest::Client::new();
    let get = |what: &'static str| {
        let client = client.clone();
        async move {
            let response = client
                .get(format!("http://127.0.0.1:{port}/{what}"))
                .send()
                .await
                .expect("request");
            (
                response.status().as_u16(),
                response.text().await.expect("body"),
            )
        }
    };
    let (status, body) = get("readyz").await;
    assert!(
        status == 200 && body.contains("default/INBOX UID 2"),
        "{status} {body}"
    );
    let (_, metrics) = get("metrics").await;
    assert!(
        metrics.contains("herald_messages_skipped_total 1"),
        "{metrics}"
    );

    // No reconnect loop: the three failed fetches (herald's POISON_LIMIT) cost one reconnect
    // each, and then herald stays connected (IDLE), fetching nothing more of it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = herald.stderr();
    let reconnects = log.matches("IMAP session failed, reconnecting.").count();
    assert!(
        (1..=3).contains(&reconnects),
        "{reconnects} reconnects\n{log}"
    );
    assert_eq!(
        log.matches("skipped. It is left on the server").count(),
        1,
        "{log}"
    );
    let got = titles(&receiver);
    assert_eq!(got.iter().filter(|t| *t == notice).count(), 1, "{got:?}");
    let body = receiver
        .received()
        .into_iter()
        .find(|r| r.body["title"] == notice)
        .map(|r| r.body)
        .expect("the notice");
    assert!(
        body["summary"]
            .as_str()
            .unwrap_or_default()
            .contains(" bytes)"),
        "{body}"
    );
    let flags = dovecot.flags("INBOX", 2).await.expect("flags");
    assert!(!flags.iter().any(|f| f == "\\Seen"), "{flags:?}");
}
