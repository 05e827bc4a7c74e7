//! Fuzz target: any bytes through `parse` and `classify` must not panic, and the alert must
//! serialise to JSON with a kind.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let truncated = data.first().is_some_and(|b| b & 1 == 1);
    let alert = herald::classify::classify(&herald::classify::parse(data, truncated));
    let json = serde_json::to_value(&alert).expect("alert serialises");
    assert!(json.get("kind").and_then(|k| k.as_str()).is_some());
    assert!(alert.title.chars().count() <= 300);
    assert!(alert.summary.chars().count() <= 300);
});
