//! G5: for arbitrary Unicode, every rendered payload is within its API's limits, is valid
//! JSON/UTF-8, and keeps the start of the title; for arbitrary digests (up to the 50 members
//! dispatch lists, of arbitrary text), every payload still fits and accounts for every
//! problem, listed or counted; and no sink's text carries a format character (U+202E and the
//! other bidi controls, zero-width characters) from mail.

use herald_bridges::sms::{self, Encoding};
use herald_bridges::text::{is_format, ZWSP};
use herald_bridges::{
    console, discord, irc, pagerduty, present, slack, twilio, Alert, Kind, Member, Severity,
};
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

fn member() -> impl Strategy<Value = Member> {
    (
        text(1000),
        proptest::option::of(text(300)),
        proptest::option::of(text(300)),
        any::<u64>(),
        (text(30), text(30)),
    )
        .prop_map(|(title, host, command, count, (first, last))| Member {
            kind: Kind::Other,
            host,
            user: None,
            command,
            failed: Some(true),
            severity: Severity::Warning,
            summary: title.clone(),
            title,
            dedup_key: String::new(),
            count,
            first,
            last,
            reminder: count % 2 == 0,
        })
}

/// A digest: an arbitrary alert (a recovery now and then) with 2 to 50 arbitrary members and
/// an arbitrary number more, under an arbitrary group key.
fn digest() -> impl Strategy<Value = Alert> {
    (
        alert(),
        proptest::collection::vec(member(), 2..=Alert::DIGEST_MAX_MEMBERS),
        prop_oneof![Just(0u64), any::<u64>()],
        proptest::option::of(text(400)),
    )
        .prop_map(|(mut alert, members, more, group_key)| {
            alert.digest = members;
            alert.digest_more = more;
            alert.group_key = group_key;
            alert
        })
}

/// Every problem is listed or counted: the member lines plus the "more" number make the total
/// (saturating, as an absurd `digest_more` may).
fn accounted(lines: &[&str], alert: &Alert) -> Result<(), TestCaseError> {
    let more = lines.last().and_then(|l| super::more_count(l)).unwrap_or(0);
    let listed = lines.len() as u64 - u64::from(more > 0);
    prop_assert_eq!(
        listed.saturating_add(more),
        present::problems(alert),
        "{:?}",
        lines
    );
    Ok(())
}

fn label(alert: &Alert) -> String {
    present::severity_label(alert)
}

fn prefix(alert: &Alert) -> String {
    alert
        .title
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect()
}

/// Every string in `value`, but PagerDuty's `facts` (structured data, not text shown).
fn strings<'a>(value: &'a serde_json::Value, out: &mut Vec<&'a str>) {
    match value {
        serde_json::Value::String(s) => out.push(s),
        serde_json::Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
        serde_json::Value::Object(map) => map
            .iter()
            .filter(|(k, _)| k.as_str() != "facts")
            .for_each(|(_, v)| strings(v, out)),
        _ => {}
    }
}

/// No format character but herald's own [`ZWSP`] (its mention and fence breaker).
fn no_format(sink: &str, texts: &[&str]) -> Result<(), TestCaseError> {
    for text in texts {
        let found = text.chars().find(|&c| is_format(c) && c != ZWSP);
        prop_assert!(found.is_none(), "{sink}: {found:?} in {text:?}");
    }
    Ok(())
}

/// Text full of format characters, mixed with the markup they could hide in.
fn hostile_text(max: usize) -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("\u{202E}".to_owned()),
        Just("\u{2066}".to_owned()),
        Just("\u{200B}".to_owned()),
        Just("\u{200D}".to_owned()),
        Just("\u{FEFF}".to_owned()),
        Just("\u{AD}".to_owned()),
        Just("\u{E0041}".to_owned()),
        Just("@everyone".to_owned()),
        Just("```".to_owned()),
        "[a-z\\[\\]()#|*_ \n]{0,8}",
        any::<char>().prop_map(String::from),
    ];
    proptest::collection::vec(piece, 0..max).prop_map(|p| p.concat())
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
            let expected = format!("{}: {}", label(&alert), prefix(&alert));
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
        // As much of the title's start as the budget holds after "CRITICAL: " and a cut's
        // "..." (a 30-character prefix does not fit in 40 units beside them).
        let keep: String = prefix(&alert).chars().take(max - 13).collect();
        let expected = format!("{}: {keep}", label(&alert));
        prop_assert!(body.starts_with(&expected), "{}", body);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn no_sink_shows_a_format_character(
        title in hostile_text(40),
        summary in hostile_text(80),
        body in hostile_text(200),
        host in hostile_text(10),
    ) {
        let mut alert = Alert::sample();
        alert.title = title;
        alert.summary = summary;
        alert.body = body;
        alert.host = Some(host.clone());
        alert.user = Some(host.clone());
        alert.command = Some(host);
        for digest in [false, true] {
            if digest {
                let member = Member {
                    kind: Kind::Other,
                    host: alert.host.clone(),
                    user: None,
                    command: alert.command.clone(),
                    failed: Some(true),
                    severity: Severity::Warning,
                    title: alert.title.clone(),
                    summary: alert.summary.clone(),
                    dedup_key: String::new(),
                    count: 2,
                    first: alert.title.clone(),
                    last: alert.summary.clone(),
                    reminder: false,
                };
                alert.digest = vec![member.clone(), member];
            }
            let mut texts = Vec::new();
            let payloads = [
                ("slack", slack::payload(&alert, None, None)),
                ("discord", discord::payload(&alert, None, None)),
                ("pagerduty", pagerduty::payload(&alert, "key", None)),
            ];
            for (sink, payload) in &payloads {
                texts.clear();
                strings(payload, &mut texts);
                no_format(sink, &texts)?;
            }
            let sms = twilio::text(&alert, 1600, Encoding::Auto, None);
            no_format("twilio", &[sms.as_str()])?;
            let style = irc::lines::Style { notice: false, colour: true, max_lines: 50 };
            let lines = irc::lines::render(&alert, style, 400);
            no_format("irc", &lines.iter().map(String::as_str).collect::<Vec<_>>())?;
            no_format("console", &[console::render(&alert).as_str()])?;
        }
    }
}

proptest! {
    // Each case builds up to 50 members of up to 1,000 characters: fewer cases, same reach.
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn slack_digest_fits_and_accounts(alert in digest()) {
        let p = slack::payload(&alert, None, None);
        roundtrip(&p);
        limits::slack(&p).map_err(TestCaseError::fail)?;
        let blocks = p["blocks"].as_array().unwrap();
        let list = blocks.last().unwrap()["text"]["text"].as_str().unwrap();
        accounted(&list.lines().collect::<Vec<_>>(), &alert)?;
    }

    #[test]
    fn discord_digest_fits_and_accounts(alert in digest()) {
        let p = discord::payload(&alert, None, None);
        roundtrip(&p);
        limits::discord(&p).map_err(TestCaseError::fail)?;
        let description = p["embeds"][0]["description"].as_str().unwrap_or("");
        // The member lines follow the summary's blank line (a summary may have none).
        let list = description.rsplit_once("\n\n").map_or(description, |(_, list)| list);
        accounted(&list.lines().collect::<Vec<_>>(), &alert)?;
    }

    #[test]
    fn pagerduty_digest_fits_and_accounts(alert in digest()) {
        let p = pagerduty::payload(&alert, "key", None);
        roundtrip(&p);
        limits::pagerduty(&p).map_err(TestCaseError::fail)?;
        prop_assert_eq!(p["dedup_key"].clone(), serde_json::json!(pagerduty::dedup_key(&alert)));
        if !alert.resolve {
            let details = &p["payload"]["custom_details"];
            let listed = details["members"].as_array().unwrap().len() as u64;
            let more = details["more"].as_u64().unwrap_or(0);
            prop_assert_eq!(listed.saturating_add(more), present::problems(&alert));
            let summary = p["payload"]["summary"].as_str().unwrap();
            let count = present::problems(&alert).to_string();
            prop_assert!(summary.starts_with(&count), "{}", summary);
        }
    }

    #[test]
    fn sms_digest_fits(alert in digest(), max in 40usize..=1600) {
        let body = twilio::text(&alert, max, Encoding::Auto, None);
        prop_assert!(sms::units(&body) <= max, "{} > {max}", sms::units(&body));
        prop_assert!(!body.chars().any(|c| c.is_control() && c != '\n'));
        // A digest's title is cut to half the budget, its marker included.
        let keep: String = prefix(&alert).chars().take(max / 2 - 1).collect();
        let expected = format!("{}: {keep}", label(&alert));
        prop_assert!(body.starts_with(&expected), "{}", body);
    }

    #[test]
    fn irc_digest_fits_and_accounts(alert in digest(), budget in 40usize..450, max_lines in 2usize..60) {
        let style = irc::lines::Style { notice: false, colour: true, max_lines };
        let texts = irc::lines::render(&alert, style, budget);
        prop_assert!(!texts.is_empty() && texts.len() <= max_lines);
        for (i, text) in texts.iter().enumerate() {
            prop_assert!(!text.is_empty() && text.len() <= budget, "{} > {budget}", text.len());
            let ours = |c: char| i == 0 && matches!(c, '\x02' | '\x03' | '\x0F');
            prop_assert!(!text.chars().any(|c| c.is_control() && !ours(c)), "{text:?}");
        }
        if alert.resolve {
            prop_assert_eq!(texts.len(), 1);
        } else {
            let members: Vec<&str> = texts.iter().skip(1).map(String::as_str).collect();
            accounted(&members, &alert)?;
        }
    }
}
