//! A state file written by herald 0.1 (`tests/fixtures/state-0.1.db`, made by the 0.1 code;
//! see `tests/fixtures/README.md`) is migrated in place at start with nothing lost: cursors,
//! queued and dead deliveries, pending marks and the first-start backlog all survive, and the
//! queued alerts are then delivered by the new pipeline.

mod common;

use std::path::{Path, PathBuf};

use common::{start_herald, Imap, DEADLINE};
use herald::store::{self, Access, Cursor, MailboxId, RowState};
use herald_testkit::{Dovecot, Receiver};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/state-0.1.db");

/// A private copy of the fixture (the migration writes to it).
fn copy_fixture(dir: &Path) -> PathBuf {
    let path = dir.join("herald.db");
    std::fs::copy(FIXTURE, &path).expect("copying the fixture");
    path
}

#[tokio::test]
async fn a_0_1_state_is_migrated_in_place_with_nothing_lost() {
    let dir = tempfile::tempdir().unwrap();
    let path = copy_fixture(dir.path());
    let version = |path: &Path| -> u32 {
        rusqlite::Connection::open(path)
            .unwrap()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap()
    };
    assert_eq!(version(&path), 0, "the fixture is a 0.1 database");

    // A command beside the daemon never migrates: it says how to.
    let error = store::open(path.clone(), Access::ReadOnly)
        .await
        .err()
        .expect("a 0.1 schema is refused read-only");
    assert!(error.to_string().contains("herald run"), "{error}");

    let store = store::open(path.clone(), Access::Daemon).await.unwrap();
    assert_eq!(version(&path), 4);
    let warning_rows: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("SELECT count(*) FROM outbox WHERE priority = 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(
        warning_rows, 18,
        "every 0.1 row gets its alert's severity (warning)"
    );
    let inbox = MailboxId::new("default", "INBOX");
    let cron = MailboxId::new("default", "Cron");
    assert_eq!(
        store.cursor(&inbox).await.unwrap(),
        Some(Cursor {
            uidvalidity: 1_700_000_000,
            last_uid: 12
        })
    );
    assert_eq!(
        store.cursor(&cron).await.unwrap(),
        Some(Cursor {
            uidvalidity: 42,
            last_uid: 100
        })
    );
    assert_eq!(
        store.pending_marks(&inbox, 1_700_000_000).await.unwrap(),
        vec![7, 8, 9, 10, 11, 12]
    );
    assert_eq!(store.backlog(&cron, 42, 10).await.unwrap(), vec![98, 99]);
    // 0.1's alerts already had their rows: nothing waits for dispatch, nothing is doubled.
    assert!(store.undispatched(100).await.unwrap().is_empty());

    let rows = store.unsent().await.unwrap();
    assert_eq!(rows.len(), 15, "{rows:?}");
    let count = |state| rows.iter().filter(|r| r.state == state).count();
    assert_eq!(
        count(RowState::Pending),
        14,
        "the `sending` row is pending again"
    );
    assert_eq!(count(RowState::Dead), 1);
    let dead = rows.iter().find(|r| r.state == RowState::Dead).unwrap();
    assert_eq!(
        (dead.sink.as_str(), dead.last_error.as_deref()),
        ("hook", Some("HTTP 404"))
    );
    let retrying = rows
        .iter()
        .find(|r| r.last_error.as_deref() == Some("HTTP 503"))
        .unwrap();
    assert_eq!((retrying.state, retrying.attempts), (RowState::Pending, 1));
    let sent: u64 = store
        .counts()
        .await
        .unwrap()
        .iter()
        .filter(|(_, s, _)| *s == RowState::Sent)
        .map(|(_, _, n)| n)
        .sum();
    assert_eq!(sent, 3);

    // The queued alerts are readable and go on to be delivered.
    let due = store.claim("pager", i64::MAX, 100).await.unwrap();
    let titles: Vec<&str> = due.iter().map(|d| d.alert.title.as_str()).collect();
    assert_eq!(due.len(), 6, "{titles:?}");
    assert!(titles.contains(&"herald could not deliver to hook: job"));
    assert!(due.iter().all(|d| d.alert.account.is_none()));

    // A migrated database opens again as it is.
    drop(store);
    let store = store::open(path.clone(), Access::Daemon).await.unwrap();
    assert_eq!(store.unsent().await.unwrap().len(), 15);
}

/// The titles of the next `n` alerts `receiver` gets.
async fn titles(
    receiver: &mut Receiver,
    n: usize,
    herald: &herald_testkit::HeraldProcess,
) -> Vec<String> {
    let mut titles = Vec::with_capacity(n);
    for _ in 0..n {
        let got = receiver
            .next(DEADLINE)
            .await
            .unwrap_or_else(|e| panic!("{e:#}\n{}", herald.stderr()));
        titles.push(got.body["title"].as_str().unwrap_or_default().to_owned());
    }
    titles
}

/// `herald run` on the 0.1 state delivers what 0.1 left queued, to the same sinks.
#[tokio::test]
async fn herald_run_delivers_what_0_1_left_queued() {
    let dovecot = Dovecot::start().await.expect("dovecot");
    let mut hook = Receiver::start().await.expect("receiver");
    let mut pager = Receiver::start().await.expect("receiver");
    let dir = tempfile::tempdir().unwrap();
    copy_fixture(dir.path());
    let config = common::write_config(dir.path(), dir.path(), &Imap::plain(&dovecot), &hook);
    let text = std::fs::read_to_string(&config).unwrap()
        + &format!(
            "\n[sinks.pager]\ntype = \"webhook\"\nurl = \"{}\"\n",
            pager.url()
        );
    std::fs::write(&config, text).unwrap();
    let herald = start_herald(&config).await;
    // hook: 8 pending rows (the dead one stays dead); pager: 6 (one was in flight).
    let mut hook_titles = titles(&mut hook, 8, &herald).await;
    let pager_titles = titles(&mut pager, 6, &herald).await;
    hook_titles.sort();
    hook_titles.dedup();
    assert_eq!(hook_titles.len(), 8, "each once: {hook_titles:?}");
    assert!(
        !hook_titles.contains(&"cron on web01.example.net: job 4".to_owned()),
        "the dead row stays dead"
    );
    assert!(pager_titles.contains(&"herald could not deliver to hook: job".to_owned()));
    assert!(
        herald.stderr().contains("Migrated the state database"),
        "{}",
        herald.stderr()
    );
    // Nothing more comes.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!((hook.count(), pager.count()), (8, 6));
}
