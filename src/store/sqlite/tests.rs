use super::*;
use crate::store::testing::{batch, dispatch_all, put, store, to};
use crate::store::{Access, Decisions, Fate, Fetched, Notification, Payload, Store};
use herald_bridges::Alert;

fn inbox() -> MailboxId {
    MailboxId::new("default", "INBOX")
}

async fn open_at(path: &Path, access: Access) -> Result<Arc<dyn Store>> {
    crate::store::open(path.to_owned(), access).await
}

#[tokio::test]
async fn ingest_commit_stores_alerts_marks_and_cursor_then_dispatch_writes_rows() {
    let (_dir, store) = store().await;
    let mut b = batch(7, &[3, 4], &["a", "b"], true);
    b.messages[1].routed = None; // dropped by a rule
    let known = store.commit(b.clone()).await.unwrap();
    assert!(known.is_empty());
    assert_eq!(
        store.cursor(&inbox()).await.unwrap(),
        Some(Cursor {
            uidvalidity: 7,
            last_uid: 4
        })
    );
    assert_eq!(store.pending_marks(&inbox(), 7).await.unwrap(), vec![3, 4]);
    assert!(
        store.claim("a", now_ms(), 10).await.unwrap().is_empty(),
        "no row before dispatch"
    );
    let waiting = store.undispatched(10).await.unwrap();
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].routed.sinks, vec!["a", "b"]);
    assert_eq!(waiting[0].routed.alert.title, Alert::sample().title);
    dispatch_all(&*store).await;
    assert!(store.undispatched(10).await.unwrap().is_empty());
    assert_eq!(store.claim("a", now_ms(), 10).await.unwrap().len(), 1);

    // Re-processing the same UID (a crash before the marks reached the server) adds nothing.
    let again = store
        .commit(batch(7, &[3], &["a", "b"], true))
        .await
        .unwrap();
    assert_eq!(again, vec![3]);
    assert!(store.undispatched(10).await.unwrap().is_empty());
    assert_eq!(store.claim("b", now_ms(), 10).await.unwrap().len(), 1);
    assert!(
        store.claim("b", now_ms(), 10).await.unwrap().is_empty(),
        "claimed rows are not due"
    );
    store.clear_marks(&inbox(), 7, vec![3]).await.unwrap();
    assert_eq!(store.pending_marks(&inbox(), 7).await.unwrap(), vec![4]);
}

#[tokio::test]
async fn dispatching_an_alert_twice_writes_its_rows_once() {
    let (_dir, store) = store().await;
    store.commit(batch(1, &[1], &["a"], false)).await.unwrap();
    let waiting = store.undispatched(10).await.unwrap();
    let decisions = Decisions {
        decided: vec![(
            waiting[0].id,
            Fate::Notified {
                group: "g".into(),
                digest: false,
            },
        )],
        notifications: vec![Notification {
            payload: Payload::Stored {
                id: waiting[0].id,
                rewrite: None,
            },
            severity: waiting[0].routed.alert.severity,
            destinations: to(&["a"]),
        }],
        ..Decisions::default()
    };
    assert!(store.dispatch(decisions.clone()).await.unwrap());
    assert!(
        !store.dispatch(decisions).await.unwrap(),
        "the second pass is refused"
    );
    assert_eq!(store.claim("a", now_ms(), 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn mailboxes_of_two_accounts_keep_their_own_cursors() {
    let (_dir, store) = store().await;
    let hub = MailboxId::new("hub", "INBOX");
    let mut b = batch(1, &[5], &["a"], true);
    b.mailbox = hub.clone();
    store.commit(b).await.unwrap();
    store.commit(batch(1, &[9], &[], true)).await.unwrap();
    assert_eq!(store.cursor(&hub).await.unwrap().unwrap().last_uid, 5);
    assert_eq!(store.cursor(&inbox()).await.unwrap().unwrap().last_uid, 9);
    assert_eq!(store.pending_marks(&hub, 1).await.unwrap(), vec![5]);
    assert_eq!(store.pending_marks(&inbox(), 1).await.unwrap(), vec![9]);
    store.clear_marks(&hub, 1, vec![5]).await.unwrap();
    assert_eq!(store.pending_marks(&inbox(), 1).await.unwrap(), vec![9]);
}

#[tokio::test]
async fn a_known_content_key_is_not_stored_again_under_new_uids() {
    let (_dir, store) = store().await;
    put(&*store, 1, &[1, 2], &["a"]).await;
    // The mailbox was recreated: same messages, new UIDVALIDITY and UIDs, plus a new one.
    let mut b = batch(2, &[1, 2, 3], &["a"], false);
    b.messages[2].content_key = "k-new".into();
    let known = store.commit(b).await.unwrap();
    assert_eq!(known, vec![1, 2]);
    dispatch_all(&*store).await;
    assert_eq!(
        store.claim("a", now_ms(), 10).await.unwrap().len(),
        3,
        "2 old + 1 new"
    );
}

#[tokio::test]
async fn rows_left_sending_return_to_pending_when_the_daemon_opens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.db");
    {
        let store = open_at(&path, Access::Daemon).await.unwrap();
        put(&*store, 1, &[1], &["a"]).await;
        assert_eq!(store.claim("a", now_ms(), 10).await.unwrap().len(), 1);
        assert_eq!(store.unsent().await.unwrap()[0].state, RowState::Sending);
    }
    {
        let admin = open_at(&path, Access::Admin).await.unwrap();
        assert_eq!(
            admin.unsent().await.unwrap()[0].state,
            RowState::Sending,
            "an admin command never resets in-flight rows"
        );
    }
    let store = open_at(&path, Access::Daemon).await.unwrap();
    assert_eq!(store.unsent().await.unwrap()[0].state, RowState::Pending);
    assert_eq!(store.claim("a", now_ms(), 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn cursor_never_moves_back_within_a_uidvalidity() {
    let (_dir, store) = store().await;
    let empty = |uidvalidity, cursor| Batch {
        mailbox: inbox(),
        uidvalidity,
        messages: Vec::new(),
        cursor,
        mark: false,
        sightings: Vec::new(),
    };
    store.commit(empty(7, 10)).await.unwrap();
    store.commit(empty(7, 5)).await.unwrap();
    assert_eq!(
        store.cursor(&inbox()).await.unwrap().map(|c| c.last_uid),
        Some(10)
    );
    store.commit(empty(8, 2)).await.unwrap();
    assert_eq!(
        store.cursor(&inbox()).await.unwrap(),
        Some(Cursor {
            uidvalidity: 8,
            last_uid: 2
        })
    );
}

#[tokio::test]
async fn outbox_states() {
    let (_dir, store) = store().await;
    put(&*store, 1, &[1, 2, 3], &["a"]).await;
    let due = store.claim("a", now_ms(), 10).await.unwrap();
    assert_eq!(due.len(), 3);
    store.mark_sent(due[0].id).await.unwrap();
    store
        .mark_dead(due[1].id, true, "rejected".into(), None)
        .await
        .unwrap();
    store
        .mark_retry(due[2].id, now_ms() + 60_000, "503".into())
        .await
        .unwrap();
    assert!(store.claim("a", now_ms(), 10).await.unwrap().is_empty());
    assert!(store.next_due("a").await.unwrap().unwrap() > now_ms());
    let counts = store.counts().await.unwrap();
    let states: Vec<_> = counts.iter().map(|(_, s, n)| (*s, *n)).collect();
    assert_eq!(
        states,
        vec![
            (RowState::Dead, 1),
            (RowState::Pending, 1),
            (RowState::Sent, 1)
        ]
    );
}

#[tokio::test]
async fn release_returns_claimed_rows_untouched() {
    let (_dir, store) = store().await;
    put(&*store, 1, &[1, 2], &["a"]).await;
    let due = store.claim("a", now_ms(), 10).await.unwrap();
    store.release(vec![due[1].id]).await.unwrap();
    let again = store.claim("a", now_ms(), 10).await.unwrap();
    assert_eq!(
        (again.len(), again[0].id, again[0].attempts),
        (1, due[1].id, 0)
    );
}

#[tokio::test]
async fn a_dead_letter_hands_its_notice_to_dispatch_in_the_same_transaction() {
    let (_dir, store) = store().await;
    put(&*store, 1, &[1], &["a"]).await;
    let row = store.claim("a", now_ms(), 10).await.unwrap().remove(0);
    let mut notice = Alert::sample();
    notice.title = "herald could not deliver".into();
    let routed = Routed {
        alert: notice,
        sinks: vec!["fallback".into()],
    };
    store
        .mark_dead(row.id, true, "HTTP 404".into(), Some(routed))
        .await
        .unwrap();
    let waiting = store.undispatched(10).await.unwrap();
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].routed.sinks, vec!["fallback"]);
    dispatch_all(&*store).await;
    let queued = store.claim("fallback", now_ms(), 10).await.unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].alert.title, "herald could not deliver");
    let dead = store
        .unsent()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.id == row.id)
        .unwrap();
    assert_eq!(
        (dead.state, dead.attempts, dead.last_error.as_deref()),
        (RowState::Dead, 1, Some("HTTP 404"))
    );
}

#[tokio::test]
async fn outbox_retry_and_drop() {
    let (_dir, store) = store().await;
    put(&*store, 1, &[1, 2], &["a"]).await;
    let due = store.claim("a", now_ms(), 10).await.unwrap();
    store
        .mark_dead(due[0].id, true, "gone".into(), None)
        .await
        .unwrap();
    store
        .mark_retry(due[1].id, now_ms() + 3_600_000, "503".into())
        .await
        .unwrap();
    assert!(store.retry_now(due[0].id).await.unwrap());
    assert!(store.drop_row(due[1].id).await.unwrap());
    assert!(!store.drop_row(due[1].id).await.unwrap());
    assert!(!store.retry_now(999).await.unwrap());
    let rows = store.unsent().await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].id, rows[0].state), (due[0].id, RowState::Pending));
}

#[tokio::test]
async fn prune_forgets_only_finished_dispatched_old_alerts() {
    let (_dir, store) = store().await;
    put(&*store, 1, &[1, 2], &["a"]).await;
    store.commit(batch(1, &[3], &["a"], false)).await.unwrap(); // undispatched: not finished
    let due = store.claim("a", now_ms(), 10).await.unwrap();
    store.mark_sent(due[0].id).await.unwrap();
    store.release(vec![due[1].id]).await.unwrap();
    assert_eq!(
        store.prune(now_ms() + 1).await.unwrap(),
        1,
        "only the finished one"
    );
    assert_eq!(store.unsent().await.unwrap().len(), 1);
    assert_eq!(store.undispatched(10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn baseline_and_backlog() {
    let (_dir, store) = store().await;
    store.commit(batch(1, &[3], &[], false)).await.unwrap();
    store
        .record_baseline(&inbox(), 2, 100, vec![98, 99])
        .await
        .unwrap();
    assert_eq!(
        store.cursor(&inbox()).await.unwrap(),
        Some(Cursor {
            uidvalidity: 2,
            last_uid: 100
        })
    );
    assert_eq!(store.backlog(&inbox(), 2, 10).await.unwrap(), vec![98, 99]);
    let mut b = batch(2, &[98], &[], false);
    b.messages = vec![Fetched {
        uid: 98,
        content_key: "k98".into(),
        routed: None,
        settled: None,
    }];
    store.commit(b).await.unwrap();
    assert_eq!(
        store.cursor(&inbox()).await.unwrap().map(|c| c.last_uid),
        Some(100)
    );
    assert_eq!(store.backlog(&inbox(), 2, 10).await.unwrap(), vec![99]);
    store.finish_backlog(&inbox(), 2, vec![99]).await.unwrap();
    assert!(store.backlog(&inbox(), 2, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.db");
    {
        let store = open_at(&path, Access::Daemon).await.unwrap();
        store.commit(batch(1, &[9], &[], false)).await.unwrap();
    }
    let store = open_at(&path, Access::Daemon).await.unwrap();
    assert_eq!(
        store.cursor(&inbox()).await.unwrap().map(|c| c.last_uid),
        Some(9)
    );
}

#[tokio::test]
async fn a_second_daemon_is_refused_while_the_first_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.db");
    let first = open_at(&path, Access::Daemon).await.unwrap();
    let error = open_at(&path, Access::Daemon).await.err().expect("refused");
    assert!(matches!(error, StoreError::Locked { .. }), "{error}");
    assert!(
        error.to_string().contains("another herald is running"),
        "{error}"
    );
    // Commands beside it still work.
    assert!(open_at(&path, Access::ReadOnly).await.is_ok());
    drop(first);
    assert!(open_at(&path, Access::Daemon).await.is_ok(), "free again");
}

#[tokio::test]
async fn a_vanished_or_emptied_state_is_not_silently_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.db");
    {
        let store = open_at(&path, Access::Daemon).await.unwrap();
        put(&*store, 1, &[1], &["a"]).await;
    }
    std::fs::write(&path, b"").unwrap();
    let error = open_at(&path, Access::Daemon).await.err().expect("refused");
    assert!(matches!(error, StoreError::Vanished { .. }), "{error}");
    assert!(error.to_string().contains("empty"), "{error}");
    std::fs::remove_file(&path).unwrap();
    let error = open_at(&path, Access::Daemon).await.err().expect("refused");
    let text = error.to_string();
    assert!(
        text.contains("missing") && text.contains("h.db.lock"),
        "{text}"
    );
    assert!(!path.exists(), "nothing was created");
    // Starting fresh on purpose: delete the lock file, as the error says.
    std::fs::remove_file(lock_path(&path)).unwrap();
    assert!(open_at(&path, Access::Daemon).await.is_ok());
}

#[tokio::test]
async fn commands_never_create_a_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nowhere/h.db");
    for access in [Access::ReadOnly, Access::Admin] {
        let error = open_at(&path, access).await.err().expect("refused");
        assert!(matches!(error, StoreError::NotFound { .. }), "{error}");
    }
    assert!(!path.exists() && !path.parent().unwrap().exists());
}

#[tokio::test]
async fn a_read_only_store_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.db");
    {
        let store = open_at(&path, Access::Daemon).await.unwrap();
        put(&*store, 1, &[1], &["a"]).await;
    }
    let store = open_at(&path, Access::ReadOnly).await.unwrap();
    assert_eq!(store.unsent().await.unwrap().len(), 1);
    assert!(store.retry_now(1).await.is_err(), "writes fail");
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.db");
    drop(open_at(&path, Access::Daemon).await.unwrap());
    {
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
    }
    let error = open_at(&path, Access::Daemon).await.err().expect("refused");
    assert!(
        matches!(error, StoreError::TooNew { found: 99, .. }),
        "{error}"
    );
}

#[tokio::test]
async fn only_ingest_and_operator_writes_wait_for_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("h.db"), Access::Daemon).unwrap();
    let synchronous = |store: &SqliteStore| -> i64 {
        store
            .inner
            .conn()
            .connection
            .pragma_query_value(None, "synchronous", |row| row.get(0))
            .unwrap()
    };
    const NORMAL: i64 = 1;
    const FULL: i64 = 2;
    assert_eq!(synchronous(&store), FULL, "opened synced");
    store.commit(batch(1, &[1], &["a"], true)).await.unwrap();
    assert_eq!(synchronous(&store), FULL, "ingest commits are synced");
    dispatch_all(&store).await;
    assert_eq!(synchronous(&store), NORMAL, "dispatch needs no fsync");
    let row = store.claim("a", now_ms(), 1).await.unwrap().remove(0);
    store.mark_sent(row.id).await.unwrap();
    assert_eq!(synchronous(&store), NORMAL);
    store.cursor(&inbox()).await.unwrap();
    assert_eq!(synchronous(&store), NORMAL, "a read changes nothing");
    assert!(!store.retry_now(row.id).await.unwrap());
    assert_eq!(synchronous(&store), FULL, "an operator's command is synced");
}

#[tokio::test]
async fn claims_take_the_most_severe_rows_first() {
    let (_dir, store) = store().await;
    let mut b = batch(1, &[1, 2, 3], &["a"], false);
    for (message, severity) in b.messages.iter_mut().zip([
        herald_bridges::Severity::Info,
        herald_bridges::Severity::Critical,
        herald_bridges::Severity::Warning,
    ]) {
        if let Some(routed) = &mut message.routed {
            routed.alert.severity = severity;
            routed.alert.title = severity.as_str().to_owned();
        }
    }
    store.commit(b).await.unwrap();
    dispatch_all(&*store).await;
    let order: Vec<String> = store
        .claim("a", now_ms(), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.alert.title)
        .collect();
    assert_eq!(order, vec!["critical", "warning", "info"]);
}
