//! The Microsoft Teams sink against a fake Workflows webhook.

use std::time::Duration;

use herald_bridges::teams;
use serde_json::{json, Value};

use super::server::{Reply, Request, Server};
use super::*;

const PATH: &str = "/workflows/1/triggers/manual/paths/invoke";
const SIG: &str = "sig=fake-signature";

fn error(status: u16, code: &str, message: &str) -> Reply {
    Reply::json(status, json!({"error": {"code": code, "message": message}}))
}

/// The card's text: every `TextRun`'s text and every fact, in order.
fn texts(card: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for element in card["body"].as_array().unwrap() {
        for run in element["inlines"].as_array().into_iter().flatten() {
            out.push(run["text"].as_str().unwrap().to_owned());
        }
        for fact in element["facts"].as_array().into_iter().flatten() {
            out.push(format!(
                "{}: {}",
                fact["title"].as_str().unwrap(),
                fact["value"].as_str().unwrap()
            ));
        }
    }
    out
}

fn card(message: &Value) -> &Value {
    &message["attachments"][0]["content"]
}

/// What the flow takes: a `message` with one Adaptive Card attachment, under 28 KB, with no
/// Markdown-parsed element but facts, whose text must be escaped.
fn check(message: &Value) -> Result<(), String> {
    let size = serde_json::to_vec(message).unwrap().len();
    if size > 28 * 1024 {
        return Err(format!("RequestEntityTooLarge: {size} bytes"));
    }
    if message["type"] != "message" {
        return Err("type must be message".into());
    }
    let attachment = &message["attachments"][0];
    if attachment["contentType"] != "application/vnd.microsoft.card.adaptive" {
        return Err("contentType".into());
    }
    let card = &attachment["content"];
    if card["type"] != "AdaptiveCard" || card["version"] != "1.4" {
        return Err("not an AdaptiveCard 1.4".into());
    }
    for element in card["body"].as_array().ok_or("body")? {
        match element["type"].as_str() {
            Some("RichTextBlock") => {}
            Some("FactSet") => {
                for fact in element["facts"].as_array().ok_or("facts")? {
                    let value = fact["value"].as_str().ok_or("fact value")?;
                    // Every Markdown character is escaped: a backslash precedes it.
                    let mut after_backslash = false;
                    for ch in value.chars() {
                        if after_backslash {
                            after_backslash = false;
                        } else if ch == '\\' {
                            after_backslash = true;
                        } else if "*_~`[]<>".contains(ch) {
                            return Err(format!("unescaped {ch:?} in {value:?}"));
                        }
                    }
                }
            }
            other => return Err(format!("unexpected element {other:?}")),
        }
    }
    if message.to_string().contains("{{") {
        return Err("a {{ function formed".into());
    }
    Ok(())
}

fn fake(script: Vec<Reply>) -> impl Fn(&Request, usize) -> Reply + Send + Sync {
    move |req, index| {
        if req.path() != PATH {
            return error(404, "WorkflowNotFound", "The workflow could not be found.");
        }
        if !req.query().split('&').any(|p| p == SIG) {
            return error(
                401,
                "DirectApiAuthorizationRequired",
                "The request must be authenticated.",
            );
        }
        match check(&req.json()) {
            Err(why) if why.starts_with("RequestEntityTooLarge") => {
                error(413, "RequestEntityTooLarge", &why)
            }
            Err(why) => error(400, "InvalidTemplate", &why),
            Ok(()) => script
                .get(index)
                .cloned()
                .unwrap_or_else(|| Reply::new(202, "")),
        }
    }
}

async fn teams(script: Vec<Reply>) -> (Server, SinkConfig) {
    let server = Server::start(fake(script)).await;
    let url = server.url(&format!("{PATH}?api-version=2016-06-01&{SIG}"));
    let config = config("teams", json!({"webhook_url": url, "rate_limit": "off"}));
    (server, config)
}

#[tokio::test]
async fn posts_an_adaptive_card() {
    let (server, config) = teams(vec![]).await;
    let alert = Alert::sample();
    assert_eq!(build(&config).deliver(&alert).await, Outcome::Delivered);
    let message = server.requests()[0].json();
    assert_eq!(config.render(&alert), message);
    let card = card(&message);
    assert_eq!(card["msteams"]["width"], "Full");
    let title = &card["body"][0]["inlines"][0];
    assert_eq!(title["weight"], "Bolder");
    assert_eq!(title["color"], "Warning");
    let texts = texts(card);
    assert_eq!(
        texts[0],
        "WARNING: cron on web01.example.net: /usr/local/bin/backup.sh"
    );
    assert!(texts.contains(&"Host: web01.example.net".to_owned()));
    assert!(
        texts.contains(&"Command: /usr/local/bin/backup.sh".to_owned()),
        "{texts:?}"
    );
    let excerpt = card["body"].as_array().unwrap().last().unwrap();
    assert_eq!(excerpt["inlines"][0]["fontType"], "Monospace");
}

#[tokio::test]
async fn hostile_mail_is_defused_and_fits() {
    let (server, config) = teams(vec![]).await;
    assert_eq!(
        build(&config).deliver(&hostile_alert()).await,
        Outcome::Delivered
    );
    let message = server.requests()[0].json();
    let texts = texts(card(&message));
    assert_eq!(
        card(&message)["body"][0]["inlines"][0]["color"],
        "Attention"
    );
    assert!(
        texts[0].starts_with("CRITICAL: Cron <root@web01> @everyone"),
        "runs are literal"
    );
    let host = texts.iter().find(|t| t.starts_with("Host: ")).unwrap();
    assert!(
        host.contains("\\*bold\\* \\_it\\_ \\~s\\~ \\`\\`\\`"),
        "{host}"
    );
    let mut dates = hostile_alert();
    dates.summary = "{{DATE(2017-02-14T06:08:00Z, SHORT)}}".into();
    dates.host = Some("{{TIME(2017-02-14T06:08:00Z)}}".into());
    check(&config.render(&dates)).unwrap();
    check(&config.render(&hostile_digest())).unwrap();
}

#[tokio::test]
async fn digest_lists_members_and_recovery_is_good() {
    let (server, config) = teams(vec![]).await;
    let sink = build(&config);
    assert_eq!(sink.deliver(&digest_alert(12, 3)).await, Outcome::Delivered);
    assert_eq!(sink.deliver(&recovery_alert()).await, Outcome::Delivered);
    let requests = server.requests();
    let digest = requests[0].json();
    let listed = texts(card(&digest));
    assert_eq!(
        listed[0],
        "WARNING: 15 problems: cron /usr/local/bin/backup.sh"
    );
    let first = listed.iter().position(|t| *t == member_line(1)).unwrap();
    for i in 1..=12 {
        assert_eq!(listed[first + i - 1], member_line(i));
    }
    assert_eq!(more_count(&listed[first + 12]), Some(3));
    let recovery = requests[1].json();
    let card = card(&recovery);
    assert_eq!(card["body"][0]["inlines"][0]["color"], "Good");
    assert!(texts(card)[0].starts_with("RESOLVED: "));
    let last = card["body"].as_array().unwrap().last().unwrap();
    assert!(last["inlines"][0].get("fontType").is_none(), "no excerpt");
    let reminder = config.render(&reminder_alert());
    assert!(texts(&reminder["attachments"][0]["content"])
        .contains(&"Repeats: 37 since 03:00".to_owned()));
}

#[tokio::test]
async fn throttled_waits_for_retry_after() {
    let (server, config) = teams(vec![
        error(429, "TooManyRequests", "Rate limit").header("retry-after", "1")
    ])
    .await;
    let sink = build(&config);
    let first = sink.deliver(&Alert::sample()).await;
    assert_eq!(retry_after(&first), Some(Duration::from_secs(1)));
    assert_eq!(reason(&first), "HTTP 429: TooManyRequests: Rate limit");
    assert_eq!(sink.deliver(&Alert::sample()).await, Outcome::Delivered);
    assert!(gap(&server.requests(), 0, 1) >= Duration::from_millis(990));
}

#[tokio::test]
async fn refusals_are_rejected_and_outages_retried() {
    let server = Server::start(fake(vec![])).await;
    let config = config(
        "teams",
        json!({"webhook_url": server.url(&format!("{PATH}?sig=revoked")), "rate_limit": "off"}),
    );
    let outcome = build(&config).deliver(&Alert::sample()).await;
    assert_eq!(
        outcome,
        Outcome::Rejected {
            reason: "HTTP 401: DirectApiAuthorizationRequired: The request must be authenticated."
                .into()
        }
    );
    assert!(!reason(&outcome).contains("revoked"));
    let (server, config) = teams(vec![Reply::new(503, "")]).await;
    let sink = build(&config);
    assert!(is_retry(&sink.deliver(&Alert::sample()).await));
    assert_eq!(sink.deliver(&Alert::sample()).await, Outcome::Delivered);
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn template_replaces_the_summary() {
    let server = Server::start(fake(vec![])).await;
    let url = server.url(&format!("{PATH}?{SIG}"));
    let config = config(
        "teams",
        json!({"webhook_url": url, "template": "{{ host }} says *{{ summary }}*"}),
    );
    assert_eq!(
        build(&config).deliver(&Alert::sample()).await,
        Outcome::Delivered
    );
    let texts = texts(card(&server.requests()[0].json()));
    assert!(texts.contains(
        &"web01.example.net says *backup.sh: error: cannot stat /srv/data: No such file or directory*"
            .to_owned()
    ), "{texts:?}");
}

#[test]
fn status_table() {
    super::status_tables::assert_default_table(teams::classify, "");
}
