//! HeraldProcess captures output, waits for lines under a deadline and delivers signals.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;

use herald_testkit::HeraldProcess;

const WAIT: Duration = Duration::from_secs(10);

/// A shell that reports, exits 3 on SIGTERM, and otherwise waits forever. `wait` (unlike a
/// foreground `sleep`) lets the trap run at once; the sleeper's output is detached so it
/// does not keep the pipes open after the shell exits.
const SCRIPT: &str = r#"trap 'echo got TERM >&2; exit 3' TERM
echo "ready $GREETING"
echo "to stderr" >&2
while :; do sleep 5 >/dev/null 2>&1 & wait $!; done"#;

#[tokio::test]
async fn captures_output_and_exits_on_sigterm() {
    let mut process =
        HeraldProcess::spawn(Path::new("/bin/sh"), &["-c", SCRIPT], &[("GREETING", "hi")]).unwrap();
    process.wait_for_stdout("ready hi", WAIT).await.unwrap();
    process.wait_for_stderr("to stderr", WAIT).await.unwrap();
    assert_eq!(process.stdout(), "ready hi\n");

    process.sigterm().unwrap();
    let status = process.wait_exit(WAIT).await.unwrap();
    assert_eq!(status.code(), Some(3));
    assert!(
        process.stderr().ends_with("got TERM\n"),
        "{}",
        process.stderr()
    );
    // Signalling an exited process is a no-op, not an error.
    process.sigterm().unwrap();
    process.kill().unwrap();
}

#[tokio::test]
async fn kill_is_sigkill() {
    let mut process = HeraldProcess::spawn(Path::new("/bin/sh"), &["-c", SCRIPT], &[]).unwrap();
    process.wait_for_stdout("ready", WAIT).await.unwrap();
    process.kill().unwrap();
    let status = process.wait_exit(WAIT).await.unwrap();
    assert_eq!(status.signal(), Some(9));
}

#[tokio::test]
async fn waiting_fails_with_the_output_when_the_line_never_comes() {
    let mut process = HeraldProcess::spawn(Path::new("/bin/sh"), &["-c", SCRIPT], &[]).unwrap();
    let error = process
        .wait_for_stderr("never printed", Duration::from_millis(200))
        .await
        .unwrap_err();
    let text = format!("{error:#}");
    assert!(
        text.contains("within") && text.contains("to stderr"),
        "{text}"
    );

    // Once the stream closes the wait fails right away instead of running out its time.
    let mut short = HeraldProcess::spawn(Path::new("/bin/sh"), &["-c", "echo bye"], &[]).unwrap();
    let started = std::time::Instant::now();
    let error = short.wait_for_stdout("never", WAIT).await.unwrap_err();
    assert!(format!("{error:#}").contains("closed"), "{error:#}");
    assert!(started.elapsed() < WAIT);
    assert!(short.wait_exit(WAIT).await.unwrap().success());
    process.kill().unwrap();
}
