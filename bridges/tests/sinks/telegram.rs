//! The Telegram sink against a fake Bot API (`sendMessage`).

use std::time::Duration;

use herald_bridges::telegram;
use serde_json::{json, Value};

use super::server::{Reply, Request, Server};
use super::*;

const TOKEN: &str = "123456:AAE-fake_token";

/// What `sendMessage` accepts: the text 1–4096 characters after entity parsing (counted
/// here on the HTML as sent, in UTF-16 units, which is never less), well-formed HTML of the
/// supported tags only, and the fields herald must send.
fn check(message: &Value) -> Result<(), String> {
    let text = message["text"].as_str().ok_or("text missing")?;
    let units = text.encode_utf16().count();
    if units == 0 || units > 4096 {
        return Err(format!("text of {units} units"));
    }
    if message["parse_mode"] != "HTML" {
        return Err("parse_mode not HTML".into());
    }
    if message["chat_id"].is_null() {
        return Err("chat_id missing".into());
    }
    // Every tag is one of ours, and balanced.
    let mut open = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('<') {
        let end = rest[start..].find('>').ok_or("unclosed <")? + start;
        let tag = &rest[start + 1..end];
        match tag {
            "b" | "i" | "pre" => open.push(tag),
            "/b" | "/i" | "/pre" => {
                if open.pop() != Some(&tag[1..]) {
                    return Err(format!("unbalanced </{tag}>"));
                }
            }
            other => return Err(format!("can't parse entities: tag <{other}>")),
        }
        rest = &rest[end + 1..];
    }
    if !open.is_empty() {
        return Err(format!("unclosed {open:?}"));
    }
    // Only the four named entities Telegram knows.
    for (i, _) in text.match_indices('&') {
        let entity = &text[i..];
        if !["&amp;", "&lt;", "&gt;", "&quot;"]
            .iter()
            .any(|e| entity.starts_with(e))
        {
            return Err(format!("unsupported entity at {i}"));
        }
    }
    Ok(())
}

fn error(code: u16, description: &str) -> Reply {
    Reply::json(
        code,
        json!({"ok": false, "error_code": code, "description": description}),
    )
}

/// A fake Bot API at `/bot<TOKEN>/sendMessage`, answering like Telegram.
fn fake(script: Vec<Reply>) -> impl Fn(&Request, usize) -> Reply + Send + Sync {
    move |req, index| {
        if req.path() != format!("/bot{TOKEN}/sendMessage") {
            return error(404, "Not Found");
        }
        if req.method != "POST"
            || !req
                .header("content-type")
                .unwrap_or_default()
                .starts_with("application/json")
        {
            return error(400, "Bad Request: message text is empty");
        }
        if let Err(why) = check(&req.json()) {
            return error(400, &format!("Bad Request: {why}"));
        }
        script.get(index).cloned().unwrap_or_else(|| {
            Reply::json(
                200,
                json!({"ok": true, "result": {"message_id": index, "chat": {"id": -100}}}),
            )
        })
    }
}

async fn telegram(script: Vec<Reply>, extra: Value) -> (Server, SinkConfig) {
    let server = Server::start(fake(script)).await;
    let mut table = json!({
        "token": TOKEN,
        "chat_id": -1001234567890i64,
        "api_base": server.url(""),
        "rate_limit": "off",
    });
    for (key, value) in extra.as_object().unwrap() {
        table[key] = value.clone();
    }
    (server, config("telegram", table))
}

fn text(request: &Request) -> String {
    request.json()["text"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn sends_an_html_message_to_the_chat() {
    let (server, config) = telegram(vec![], json!({"message_thread_id": 7})).await;
    let alert = Alert::sample();
    assert_eq!(build(&config).deliver(&alert).await, Outcome::Delivered);
    let request = &server.requests()[0];
    let body = request.json();
    assert_eq!(body["chat_id"], -1001234567890i64);
    assert_eq!(body["message_thread_id"], 7);
    assert_eq!(body["parse_mode"], "HTML");
    assert_eq!(body["link_preview_options"], json!({"is_disabled": true}));
    let text = text(request);
    assert!(
        text.starts_with(
            "⚠️ <b>WARNING: cron on web01.example.net: /usr/local/bin/backup.sh</b>\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("\n<b>Host:</b> web01.example.net\n"),
        "{text}"
    );
    assert!(text.contains("<pre>backup.sh: error: cannot stat /srv/data"));
    assert_eq!(config.render(&alert), body, "render shows what is sent");
}

#[tokio::test]
async fn a_channel_username_and_previews_on() {
    let (server, config) = telegram(
        vec![],
        json!({"chat_id": "@ops_alerts", "disable_web_page_preview": false}),
    )
    .await;
    assert_eq!(
        build(&config).deliver(&Alert::sample()).await,
        Outcome::Delivered
    );
    let body = server.requests()[0].json();
    assert_eq!(body["chat_id"], "@ops_alerts");
    assert_eq!(body["link_preview_options"]["is_disabled"], false);
    assert!(body.get("message_thread_id").is_none());
}

#[tokio::test]
async fn hostile_mail_is_escaped_and_fits() {
    let (server, config) = telegram(vec![], json!({})).await;
    let alert = hostile_alert();
    assert_eq!(build(&config).deliver(&alert).await, Outcome::Delivered);
    let text = text(&server.requests()[0]);
    assert!(
        text.starts_with("🚨 <b>CRITICAL: Cron &lt;root@web01&gt;"),
        "{text}"
    );
    assert!(!text.contains("<script>"));
    assert!(text.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(text.ends_with('…') || text.ends_with("</pre>"), "{text}");
    // Emoji and other astral characters count twice, and still fit.
    let mut emoji = Alert::sample();
    emoji.body = "🔥".repeat(4000);
    emoji.summary = "👩‍👩‍👧".repeat(500);
    check(&config.render(&emoji)).unwrap();
}

#[tokio::test]
async fn digest_lists_its_members() {
    let (server, config) = telegram(vec![], json!({})).await;
    assert_eq!(
        build(&config).deliver(&digest_alert(12, 3)).await,
        Outcome::Delivered
    );
    let text = text(&server.requests()[0]);
    assert!(text.contains("<b>WARNING: 15 problems: cron /usr/local/bin/backup.sh</b>"));
    let lines: Vec<&str> = text.lines().collect();
    let first = lines.iter().position(|l| *l == member_line(1)).unwrap();
    for i in 1..=12 {
        assert_eq!(lines[first + i - 1], member_line(i));
    }
    assert_eq!(more_count(lines[first + 12]), Some(3));
    assert!(!text.contains("<pre>"), "a digest has no excerpt");
    // The biggest, most hostile digest still fits and counts every problem.
    let body = config.render(&hostile_digest());
    check(&body).unwrap();
    let text = body["text"].as_str().unwrap();
    let listed = text.lines().filter(|l| l.contains(" ×")).count() as u64;
    let more = text.lines().find_map(more_count).unwrap();
    assert_eq!(listed + more, 250);
}

#[tokio::test]
async fn recovery_is_labelled_resolved() {
    let (server, config) = telegram(vec![], json!({})).await;
    assert_eq!(
        build(&config).deliver(&recovery_alert()).await,
        Outcome::Delivered
    );
    let text = text(&server.requests()[0]);
    assert!(text.starts_with("✅ <b>RESOLVED: cron on web01"), "{text}");
    assert!(!text.contains("<pre>"), "a recovery has no excerpt");
    let reminder = config.render(&reminder_alert());
    assert!(reminder["text"]
        .as_str()
        .unwrap()
        .contains("<b>Repeats:</b> 37 since 03:00"));
}

#[tokio::test]
async fn template_replaces_the_summary_and_may_use_html() {
    let (server, config) = telegram(
        vec![],
        json!({"template": "<i>{{ host }}</i> said {{ summary }}"}),
    )
    .await;
    let mut alert = Alert::sample();
    alert.summary = "<b>bold</b>".into();
    assert_eq!(build(&config).deliver(&alert).await, Outcome::Delivered);
    let text = text(&server.requests()[0]);
    // The template's own tags stay tags; mail's are text.
    assert!(text.contains("<i>web01.example.net</i> said &lt;b&gt;bold&lt;/b&gt;"));
}

#[tokio::test]
async fn flood_control_waits_for_retry_after() {
    let (server, config) = telegram(
        vec![Reply::json(
            429,
            json!({"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 1", "parameters": {"retry_after": 1}}),
        )],
        json!({}),
    )
    .await;
    let sink = build(&config);
    let first = sink.deliver(&Alert::sample()).await;
    assert_eq!(retry_after(&first), Some(Duration::from_secs(1)));
    assert_eq!(reason(&first), "HTTP 429: Too Many Requests: retry after 1");
    assert_eq!(sink.deliver(&Alert::sample()).await, Outcome::Delivered);
    assert!(gap(&server.requests(), 0, 1) >= Duration::from_millis(990));
}

#[tokio::test]
async fn refusals_are_rejected_with_the_description() {
    for (reply, expected) in [
        (
            error(400, "Bad Request: chat not found"),
            "HTTP 400: Bad Request: chat not found",
        ),
        (error(401, "Unauthorized"), "HTTP 401: Unauthorized"),
        (
            error(403, "Forbidden: bot was blocked by the user"),
            "HTTP 403: Forbidden: bot was blocked by the user",
        ),
    ] {
        let (_server, config) = telegram(vec![reply], json!({})).await;
        let outcome = build(&config).deliver(&Alert::sample()).await;
        assert_eq!(
            outcome,
            Outcome::Rejected {
                reason: expected.into()
            }
        );
        assert!(!reason(&outcome).contains("AAE"), "no token in the reason");
    }
}

#[tokio::test]
async fn server_errors_are_retried() {
    let (server, config) = telegram(vec![error(502, "Bad Gateway")], json!({})).await;
    let sink = build(&config);
    assert!(is_retry(&sink.deliver(&Alert::sample()).await));
    assert_eq!(sink.deliver(&Alert::sample()).await, Outcome::Delivered);
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn status_table() {
    super::status_tables::assert_default_table(telegram::classify, r#"{"ok":true,"result":{}}"#);
}

#[test]
fn no_token_in_validation_errors() {
    for table in [
        json!({"token": "123:SEKRIT/../x", "chat_id": 1}),
        json!({"token": "SEKRIT", "chat_id": 1}),
        json!({"token": "1:SEKRIT", "chat_id": 1, "api_base": "ftp://SEKRIT"}),
    ] {
        let config = SinkConfig::deserialize_typed("telegram", table).unwrap();
        let error = config.validate().unwrap_err().to_string();
        assert!(!error.contains("SEKRIT"), "{error}");
    }
}
