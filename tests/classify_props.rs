//! Property tests: random and mutated messages never make `parse` or `classify` panic, and the
//! alert always serialises to JSON with a kind and bounded strings.
//!
//! Seeds are the golden corpus (`tests/corpus/**/*.eml`); mutations flip, insert, delete and
//! splice bytes, cut the message short, and swap line endings. `PROPTEST_CASES` raises the
//! number of cases (default 256 per property).

use std::path::Path;
use std::sync::LazyLock;

use herald::classify::{classify, parse};
use herald_bridges::Kind;
use proptest::prelude::*;

static SEEDS: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| {
    let files =
        herald_testkit::eml_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus"))
            .expect("corpus");
    let seeds: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(f).unwrap())
        // Keep mutation cheap: the huge-body seed is covered by the corpus test.
        .filter(|b| b.len() < 64 * 1024)
        .collect();
    assert!(!seeds.is_empty());
    seeds
});

/// Fragments that steer random input towards the parsers' formats.
const FRAGMENTS: &[&str] = &[
    "Subject: ",
    "Cron <root@h> ",
    " (failed)",
    "Anacron job 'x' on ",
    "[h] Failure: ",
    "[h] job x.service failed",
    "*** SECURITY information for ",
    " : ",
    " ; COMMAND=",
    "TTY=",
    "SMART error (",
    ") detected on host: ",
    " event on /dev/md0:",
    "unattended-upgrades result for ",
    " package update(s) for ",
    "Logwatch for ",
    "[Fail2Ban] ",
    ": banned ",
    "ZFS ",
    " error for ",
    " Power Failure !!!",
    "Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\n",
    "Content-Type: message/delivery-status\n",
    "--b\n",
    "--b--\n",
    "Final-Recipient: rfc822; ",
    "Action: failed\n",
    "Content-Transfer-Encoding: base64\n",
    "Content-Transfer-Encoding: quoted-printable\n",
    "Content-Type: text/html; charset=windows-1252\n",
    "=?utf-8?B?",
    "=?iso-8859-1?Q?=E9",
    "?=",
    "● x.service - y\n Loaded: loaded\n Active: failed (Result: exit-code)\n",
    "Main PID: 1 (code=exited, status=",
    "\n\n",
    "\r\n",
    "<html><h1>",
    "&amp;&#x1F600;&#99999999;",
    "é",
    "\u{0}",
    "\u{202e}",
];

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Fragment(usize, usize),
    Delete(usize, usize),
    Truncate(usize),
    Crlf,
    Splice(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 0..16))
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        (any::<usize>(), any::<usize>()).prop_map(|(i, f)| Mutation::Fragment(i, f)),
        (any::<usize>(), 0usize..256).prop_map(|(i, n)| Mutation::Delete(i, n)),
        any::<usize>().prop_map(Mutation::Truncate),
        Just(Mutation::Crlf),
        (any::<usize>(), any::<usize>()).prop_map(|(s, i)| Mutation::Splice(s, i)),
    ]
}

fn apply(mut data: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = data.len();
        match m {
            Mutation::Flip(i, b) if len > 0 => data[i % len] ^= b,
            Mutation::Insert(i, v) => {
                let at = i % (len + 1);
                data.splice(at..at, v.iter().copied());
            }
            Mutation::Fragment(i, f) => {
                let at = i % (len + 1);
                let frag = FRAGMENTS[f % FRAGMENTS.len()].as_bytes();
                data.splice(at..at, frag.iter().copied());
            }
            Mutation::Delete(i, n) if len > 0 => {
                let at = i % len;
                let end = (at + n).min(len);
                data.drain(at..end);
            }
            Mutation::Truncate(i) => data.truncate(i % (len + 1)),
            Mutation::Crlf => {
                data = data
                    .iter()
                    .flat_map(|&b| {
                        if b == b'\n' {
                            vec![b'\r', b'\n']
                        } else {
                            vec![b]
                        }
                    })
                    .collect();
            }
            Mutation::Splice(s, i) => {
                let other = &SEEDS[s % SEEDS.len()];
                let at = i % (len + 1);
                let from = i % (other.len() + 1);
                data.splice(at..at, other[from..].iter().copied().take(512));
            }
            _ => {}
        }
    }
    data
}

fn check(raw: &[u8]) {
    let alert = classify(&parse(raw, false));
    let json = serde_json::to_value(&alert).expect("alert serialises");
    let kind = json.get("kind").and_then(|k| k.as_str()).expect("a kind");
    assert!(Kind::ALL.iter().any(|k| k.as_str() == kind));
    assert!(alert.title.chars().count() <= 300);
    assert!(alert.summary.chars().count() <= 300);
    assert!(alert.dedup_key.chars().count() <= 2000);
    assert!(alert.body.chars().count() <= 4000);
    assert!(alert.subject.chars().count() <= 1000);
    for s in [&alert.host, &alert.user].into_iter().flatten() {
        assert!(s.chars().count() <= 255);
    }
    assert!(alert
        .command
        .as_ref()
        .is_none_or(|c| c.chars().count() <= 1000));
    assert!(!alert.title.contains(['\r', '\n']));
    assert!(!alert.summary.contains(['\r', '\n']));
    // Round trip: what the webhook sends, a script can read back.
    let text = serde_json::to_string(&alert).unwrap();
    let back: herald_bridges::Alert = serde_json::from_str(&text).unwrap();
    assert_eq!(back.kind, alert.kind);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256),
        failure_persistence: None,
        .. ProptestConfig::default()
    })]

    #[test]
    fn random_bytes_never_panic(raw in prop::collection::vec(any::<u8>(), 0..4096)) {
        check(&raw);
    }

    #[test]
    fn random_fragment_soup_never_panics(
        picks in prop::collection::vec((any::<usize>(), prop::collection::vec(any::<u8>(), 0..8)), 0..64)
    ) {
        let mut raw = Vec::new();
        for (f, noise) in picks {
            raw.extend_from_slice(FRAGMENTS[f % FRAGMENTS.len()].as_bytes());
            raw.extend_from_slice(&noise);
        }
        check(&raw);
    }

    #[test]
    fn mutated_corpus_never_panics(
        seed in any::<usize>(),
        mutations in prop::collection::vec(mutation(), 1..12),
    ) {
        let raw = apply(SEEDS[seed % SEEDS.len()].clone(), &mutations);
        check(&raw);
    }
}
