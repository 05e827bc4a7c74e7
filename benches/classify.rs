//! Classification throughput over the golden corpus: parse + classify of every
//! `tests/corpus/**/*.eml` (the 200 KB `huge-body` message included), on one thread.
//!
//! Target: at least 50,000 messages per second on one core. The pipeline is a list of steps so
//! that the rules step (another module) can be added as `|alert| rules.apply(alert)` without
//! changing the measurement. `cargo bench --bench classify`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use herald::classify::{classify, parse};
use herald_bridges::Alert;

fn corpus() -> Vec<Vec<u8>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "eml") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus"),
        &mut files,
    );
    files.sort();
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

/// One message through the pipeline: parse, classify, then any later steps (rules).
fn pipeline(raw: &[u8], steps: &[fn(Alert) -> Alert]) -> Alert {
    let alert = classify(&parse(raw, false));
    steps.iter().fold(alert, |alert, step| step(alert))
}

fn bench(c: &mut Criterion) {
    let messages = corpus();
    let typical: Vec<Vec<u8>> = messages
        .iter()
        .filter(|m| m.len() < 64 * 1024)
        .cloned()
        .collect();
    let steps: &[fn(Alert) -> Alert] = &[];
    let mut group = c.benchmark_group("classify");
    group.measurement_time(Duration::from_secs(5));
    for (name, set) in [("corpus", &messages), ("corpus-without-huge", &typical)] {
        group.throughput(Throughput::Elements(set.len() as u64));
        group.bench_with_input(BenchmarkId::new("parse+classify", name), set, |b, set| {
            b.iter(|| {
                for raw in set.iter() {
                    std::hint::black_box(pipeline(std::hint::black_box(raw), steps));
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
