//! G5: for arbitrary Unicode, every rendered payload is within its API's limits, is valid
//! JSON/UTF-8, and keeps the start of the title.

use herald_bridges::sms::{self, Encoding};
use herald_bridges::{discord, pagerduty, slack, twilio, Alert, Kind, Severity};
use proptest::prelude::*;

use super::limits;

fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 0..max).prop_map(|c| c.into_iter().collect())
}

fn alert() -> impl Strategy<Value = Alert> {
    (
        ("[A-Za-z0-9]{1,30}", text(400)),
        text(4000),
        text(60_000),
        proptest::option::of(text(300)),
        proptest::option::of(text(3000)),
        // An empty key is drawn often: a resolve must still name its incident.
        prop_oneof![1 => Just(String::new()), 4 => text(600)],
        prop_oneof![
            Just(Severity::Info),
            Just(Severity::Warning),
            Just(Severity::Critical)
        ],
        any::<bool>(),
    )
        .prop_map(
            |((prefix, rest), summary, body, host, command, key, severity, resolve)| {
                let mut alert = Alert::sample();
                alert.kind = Kind::Other;
                alert.title = format!("{prefix}{rest}");
                alert.summary = summary;
                alert.body = body;
                alert.host = host;
                alert.user = alert.host.clone();
                alert.command = command;
                alert.dedup_key = key;
                alert.severity = severity;
                alert.resolve = resolve;
                alert
            },
        )
}

fn prefix(alert: &Alert) -> String {
    alert
        .title
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect()
}

fn roundtrip(value: &serde_json::Value) {
    let bytes = serde_json::to_vec(value).unwrap();
    let back: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(&back, value);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn slack_payload_fits(alert in alert()) {
        for channel in [None, Some("C1")] {
            let p = slack::payload(&alert, channel, None);
            roundtrip(&p);
            limits::slack(&p).map_err(TestCaseError::fail)?;
            let header = p["blocks"][0]["text"]["text"].as_str().unwrap();
            let expected = format!("{}: {}", alert.severity.as_str().to_uppercase(), prefix(&alert));
            prop_assert!(header.starts_with(&expected), "{header}");
        }
    }

    #[test]
    fn discord_payload_fits(alert in alert()) {
        let p = discord::payload(&alert, Some("herald"), None);
        roundtrip(&p);
        limits::discord(&p).map_err(TestCaseError::fail)?;
        let title = p["embeds"][0]["title"].as_str().unwrap();
        prop_assert!(title.contains(&prefix(&alert)), "{title}");
    }

    #[test]
    fn pagerduty_event_fits(alert in alert()) {
        let p = pagerduty::payload(&alert, "key", None);
        roundtrip(&p);
        limits::pagerduty(&p).map_err(TestCaseError::fail)?;
        prop_assert_eq!(p["dedup_key"].clone(), serde_json::json!(pagerduty::dedup_key(&alert)));
        if !alert.resolve {
            let summary = p["payload"]["summary"].as_str().unwrap();
            prop_assert!(summary.starts_with(&prefix(&alert)), "{}", summary);
        }
    }

    #[test]
    fn sms_text_fits(alert in alert(), max in 40usize..=1600, gsm in any::<bool>()) {
        let encoding = if gsm { Encoding::Gsm7 } else { Encoding::Auto };
        let body = twilio::text(&alert, max, encoding, None);
        prop_assert!(sms::units(&body) <= max, "{} > {max}", sms::units(&body));
        prop_assert!(body.chars().count() <= 1600);
        prop_assert!(!body.chars().any(|c| c.is_control() && c != '\n'));
        if gsm {
            prop_assert!(body.chars().all(sms::is_gsm));
        }
        let expected = format!("{}: {}", alert.severity.as_str().to_uppercase(), prefix(&alert));
        prop_assert!(body.starts_with(&expected), "{}", body);
    }
}
