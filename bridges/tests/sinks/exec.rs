//! The exec sink with real small scripts, run as `/bin/sh <script> <dir>` (running the
//! script file itself could meet "Text file busy" while another test thread forks).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use super::*;

/// A scratch directory, removed on drop.
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Dir {
    fn new() -> Dir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "herald-exec-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        Dir(path)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.file(name)).unwrap()
    }

    /// An exec sink running `body` as a shell script with this directory as `$1`.
    fn sink(&self, body: &str, extra: serde_json::Value) -> (SinkConfig, Box<dyn Sink>) {
        let script = self.file("hook.sh");
        std::fs::write(&script, body).unwrap();
        let mut table = json!({"command": ["/bin/sh", script, self.0]});
        for (k, v) in extra.as_object().unwrap() {
            table[k] = v.clone();
        }
        let config = config("exec", table);
        let sink = build(&config);
        (config, sink)
    }
}

/// Whether `pid` still runs (a zombie runs nothing).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest.trim_start());
        !state.starts_with('Z') && !state.starts_with('X')
    })
}

/// Waits up to 3 s for `pid` to be gone.
async fn gone(pid: u32) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Waits up to 3 s for the file a script writes, then reads the pid in it.
async fn pid_in(path: &Path) -> u32 {
    let start = Instant::now();
    loop {
        if let Some(pid) = std::fs::read_to_string(path)
            .ok()
            .and_then(|text| text.trim().parse().ok())
        {
            return pid;
        }
        assert!(start.elapsed() < Duration::from_secs(3), "no {path:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_alert_arrives_on_stdin_and_in_the_environment() {
    let dir = Dir::new();
    let (config, sink) = dir.sink(
        "cat > \"$1/stdin\"; env > \"$1/env\"; echo done",
        json!({"template": "{{ host }} failed"}),
    );
    let alert = hostile_alert();
    assert_eq!(sink.deliver(&alert).await, Outcome::Delivered);
    let received: Alert = serde_json::from_str(&dir.read("stdin")).unwrap();
    assert_eq!(received, alert, "the alert JSON, intact");
    let env = dir.read("env");
    let vars: Vec<(&str, &str)> = env.lines().filter_map(|l| l.split_once('=')).collect();
    let var = |name: &str| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
    assert_eq!(var("HERALD_KIND"), Some("cron"));
    assert_eq!(var("HERALD_SEVERITY"), Some("critical"));
    assert_eq!(var("HERALD_LABEL"), Some("CRITICAL"));
    assert_eq!(var("HERALD_RESOLVE"), Some("false"));
    assert_eq!(var("HERALD_EXIT_STATUS"), Some("1"));
    assert_eq!(var("HERALD_USER"), Some("root`@everyone`"));
    let title = var("HERALD_TITLE").unwrap();
    assert!(title.starts_with("Cron <root@web01> @everyone") && title.ends_with("Injected: line"));
    assert!(var("HERALD_TEXT").unwrap().ends_with(" failed"));
    assert!(var("HERALD_DEDUP_KEY").unwrap().starts_with("cron:kkk"));
    // One variable per line: no value broke out onto a line of its own.
    for line in env.lines() {
        assert!(line.contains('='), "{line:?}");
    }
    // Nothing of herald's own environment but the kept few (cargo sets CARGO_* for tests).
    let allowed = [
        "PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "PWD", "OLDPWD", "SHLVL", "_",
    ];
    for (name, _) in &vars {
        assert!(
            name.starts_with("HERALD_") || allowed.contains(name),
            "{name} leaked"
        );
    }
    let rendered = config.render(&alert);
    assert_eq!(rendered["env"]["HERALD_TITLE"], title);
    assert_eq!(rendered["stdin"], serde_json::to_value(&alert).unwrap());
}

#[tokio::test]
async fn digests_recoveries_and_reminders_are_in_the_environment() {
    let dir = Dir::new();
    let (_, sink) = dir.sink("env > \"$1/env.$HERALD_LABEL\"", json!({}));
    for alert in [digest_alert(3, 9), recovery_alert()] {
        assert_eq!(sink.deliver(&alert).await, Outcome::Delivered);
    }
    let digest = dir.read("env.WARNING");
    assert!(
        digest.lines().any(|l| l == "HERALD_PROBLEMS=12"),
        "{digest}"
    );
    assert!(digest
        .lines()
        .any(|l| l == format!("HERALD_GROUP_KEY={GROUP_KEY}")));
    let recovery = dir.read("env.RESOLVED");
    assert!(recovery.lines().any(|l| l == "HERALD_RESOLVE=true"));
    let (_, sink) = dir.sink("env > \"$1/env\"", json!({}));
    assert_eq!(sink.deliver(&reminder_alert()).await, Outcome::Delivered);
    assert!(dir.read("env").lines().any(|l| l == "HERALD_REPEATS=37"));
}

#[tokio::test]
async fn exit_statuses_decide() {
    let dir = Dir::new();
    let (_, sink) = dir.sink("echo 'try later' >&2; exit 75", json!({}));
    let outcome = sink.deliver(&Alert::sample()).await;
    assert!(is_retry(&outcome), "{outcome:?}");
    assert_eq!(reason(&outcome), "exit status 75 (EX_TEMPFAIL): try later");
    let (_, sink) = dir.sink(
        "printf '\\n  \\nno such team: ops\\n\\033[31msecond line' >&2; exit 1",
        json!({}),
    );
    assert_eq!(
        sink.deliver(&Alert::sample()).await,
        Outcome::Rejected {
            reason: "exit status 1: no such team: ops".into()
        }
    );
    // Megabytes on stderr and stdout: read and dropped, never blocking the command.
    let (_, sink) = dir.sink(
        "yes 'too much' | head -c 3000000 >&2; yes | head -c 3000000; exit 3",
        json!({}),
    );
    let outcome = sink.deliver(&Alert::sample()).await;
    assert_eq!(reason(&outcome), "exit status 3: too much");
    let (_, sink) = dir.sink("kill -9 $$", json!({}));
    assert!(is_retry(&sink.deliver(&Alert::sample()).await));
}

#[tokio::test]
async fn a_missing_program_is_rejected() {
    let missing = config("exec", json!({"command": ["/nonexistent/herald-hook"]}));
    let outcome = build(&missing).deliver(&Alert::sample()).await;
    assert!(is_rejected(&outcome), "{outcome:?}");
    assert!(reason(&outcome).starts_with("cannot run /nonexistent/herald-hook"));
    // A bare name is looked up in PATH.
    let bare = config("exec", json!({"command": ["true"]}));
    assert_eq!(
        build(&bare).deliver(&Alert::sample()).await,
        Outcome::Delivered
    );
}

#[tokio::test]
async fn the_timeout_kills_the_whole_group() {
    let dir = Dir::new();
    let (_, sink) = dir.sink(
        "sleep 30 & echo $! > \"$1/grandchild\"; echo $$ > \"$1/child\"; sleep 30",
        json!({"timeout": "1s"}),
    );
    let start = Instant::now();
    let outcome = sink.deliver(&Alert::sample()).await;
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    assert!(is_retry(&outcome), "{outcome:?}");
    assert!(
        reason(&outcome).starts_with("timed out after 1s"),
        "{outcome:?}"
    );
    for name in ["child", "grandchild"] {
        let pid = pid_in(&dir.file(name)).await;
        assert!(gone(pid).await, "{name} {pid} outlived the timeout");
    }
}

#[tokio::test]
async fn a_leftover_holding_the_output_is_killed_at_the_timeout() {
    let dir = Dir::new();
    // The command succeeds at once, but leaves a process holding its stdout and stderr.
    let (_, sink) = dir.sink(
        "sleep 30 & echo $! > \"$1/grandchild\"; exit 0",
        json!({"timeout": "1s"}),
    );
    let start = Instant::now();
    assert_eq!(sink.deliver(&Alert::sample()).await, Outcome::Delivered);
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    let pid = pid_in(&dir.file("grandchild")).await;
    assert!(gone(pid).await, "grandchild {pid} outlived the timeout");
}

#[tokio::test]
async fn an_abandoned_delivery_kills_the_group() {
    let dir = Dir::new();
    let (_, sink) = dir.sink(
        "sleep 30 & echo $! > \"$1/grandchild\"; sleep 30",
        json!({"timeout": "1m"}),
    );
    let abandoned =
        tokio::time::timeout(Duration::from_millis(500), sink.deliver(&Alert::sample())).await;
    assert!(abandoned.is_err(), "still running at 500 ms");
    let pid = pid_in(&dir.file("grandchild")).await;
    assert!(
        gone(pid).await,
        "grandchild {pid} outlived the dropped delivery"
    );
}
