//! The golden corpus: every `tests/corpus/**/*.eml` is parsed and classified, with LF and with
//! CRLF line endings, and the alert (as JSON) must equal the `*.expected.json` beside it.
//!
//! On a mismatch the actual output is written to `*.actual.json` next to the input and the test
//! fails naming it. To accept new outputs after a deliberate change, run with
//! `HERALD_BLESS=1` and review the diff of the `*.expected.json` files.
//!
//! A file whose name contains `truncated` is classified as a truncated fetch.

use std::path::{Path, PathBuf};

use herald::classify::{classify, parse};
use herald_bridges::Kind;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// `raw` with every line ending made LF.
fn to_lf(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut iter = raw.iter().peekable();
    while let Some(&b) = iter.next() {
        if b == b'\r' && iter.peek() == Some(&&b'\n') {
            continue;
        }
        out.push(b);
    }
    out
}

/// `raw` (LF) with every line ending made CRLF.
fn to_crlf(lf: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(lf.len() + lf.len() / 20);
    for &b in lf {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

fn render(raw: &[u8], truncated: bool) -> serde_json::Value {
    let alert = classify(&parse(raw, truncated));
    serde_json::to_value(&alert).unwrap()
}

#[test]
fn golden_corpus() {
    let files = herald_testkit::eml_files(&corpus_dir()).expect("corpus");
    assert!(!files.is_empty(), "the corpus is empty");
    let bless = std::env::var_os("HERALD_BLESS").is_some();
    let mut failures = Vec::new();
    let mut kinds_seen = std::collections::BTreeSet::new();
    for path in &files {
        let raw = std::fs::read(path).unwrap();
        let truncated = path.to_string_lossy().contains("truncated");
        let lf = to_lf(&raw);
        let crlf = to_crlf(&lf);
        let from_lf = render(&lf, truncated);
        let from_crlf = render(&crlf, truncated);
        let expected_path = path.with_extension("expected.json");
        let actual_path = path.with_extension("actual.json");
        if bless {
            let text = serde_json::to_string_pretty(&from_lf).unwrap() + "\n";
            std::fs::write(&expected_path, text).unwrap();
        }
        let expected: Option<serde_json::Value> = std::fs::read_to_string(&expected_path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        if let Some(kind) = from_lf.get("kind").and_then(|k| k.as_str()) {
            kinds_seen.insert(kind.to_owned());
        }
        let mut write_actual = |value: &serde_json::Value, what: &str| {
            std::fs::write(
                &actual_path,
                serde_json::to_string_pretty(value).unwrap() + "\n",
            )
            .unwrap();
            failures.push(format!("{} ({what})", actual_path.display()));
        };
        match &expected {
            None => write_actual(&from_lf, "no expected.json"),
            Some(e) if *e != from_lf => write_actual(&from_lf, "LF differs"),
            Some(e) if *e != from_crlf => write_actual(&from_crlf, "CRLF differs"),
            Some(_) => {
                let _ = std::fs::remove_file(&actual_path);
            }
        }
    }
    println!(
        "corpus: {} messages, each run with LF and CRLF",
        files.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} corpus messages differ from their expected output; actual output written to:\n  {}",
        failures.len(),
        files.len(),
        failures.join("\n  ")
    );
    // `missing` is herald's own (an expectation's alert), never a mail's.
    for kind in Kind::ALL.into_iter().filter(|k| *k != Kind::Missing) {
        assert!(
            kinds_seen.contains(kind.as_str()),
            "no corpus message is classified as {kind}"
        );
    }
}
