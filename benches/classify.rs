//! Classification throughput over the golden corpus: parse + classify of every
//! `tests/corpus/**/*.eml` (the 200 KB `huge-body` message included), on one thread.
//!
//! Target: at least 50,000 messages per second on one core, rules included: the
//! `parse+classify+rules` rows route every message through the 20 typical rules of
//! `herald::route::typical_config_toml()`. `cargo bench --bench classify`.

use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use herald::classify::{classify, parse};
use herald::config::Config;
use herald::route::Router;
use herald_bridges::Alert;

fn corpus() -> Vec<Vec<u8>> {
    let files =
        herald_testkit::eml_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus"))
            .expect("corpus");
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

/// One message through parse and classify only.
fn pipeline(raw: &[u8]) -> Alert {
    classify(&parse(raw, false))
}

/// The router for the 20 typical rules.
fn typical_router() -> Router {
    let text = herald::route::typical_config_toml();
    let config = Config::parse(Path::new("typical.toml"), &text, &|_| None)
        .unwrap_or_else(|e| panic!("typical config: {e}"));
    Router::new(config.rules, config.default_sinks)
}

fn bench(c: &mut Criterion) {
    let messages = corpus();
    let typical: Vec<Vec<u8>> = messages
        .iter()
        .filter(|m| m.len() < 64 * 1024)
        .cloned()
        .collect();
    let router = typical_router();
    let mut group = c.benchmark_group("classify");
    group.measurement_time(Duration::from_secs(5));
    for (name, set) in [("corpus", &messages), ("corpus-without-huge", &typical)] {
        group.throughput(Throughput::Elements(set.len() as u64));
        group.bench_with_input(BenchmarkId::new("parse+classify", name), set, |b, set| {
            b.iter(|| {
                for raw in set.iter() {
                    std::hint::black_box(pipeline(std::hint::black_box(raw)));
                }
            })
        });
        group.bench_with_input(
            BenchmarkId::new("parse+classify+rules", name),
            set,
            |b, set| {
                b.iter(|| {
                    for raw in set.iter() {
                        std::hint::black_box(router.decide(std::hint::black_box(raw), false, None));
                    }
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
