//! What each API accepts, as checks: used by the fake servers (which refuse what the real API
//! would) and by the property tests. Numbers from reference/sinks.md.

use serde_json::Value;

fn chars(v: &Value) -> usize {
    v.as_str().map_or(0, |s| s.chars().count())
}

fn ensure(ok: bool, what: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(what.to_owned())
    }
}

/// Slack message limits (§1.3) and hygiene (§1.4).
pub fn slack(message: &Value) -> Result<(), String> {
    let text = &message["text"];
    ensure(text.is_string() && chars(text) > 0, "text missing")?;
    ensure(chars(text) <= 40_000, "text over 40000")?;
    ensure(message["unfurl_links"] == false, "unfurl_links not false")?;
    ensure(message["unfurl_media"] == false, "unfurl_media not false")?;
    ensure(message.get("link_names").is_none(), "link_names sent")?;
    ensure(message.get("parse").is_none(), "parse sent")?;
    let blocks = message["blocks"].as_array().ok_or("blocks missing")?;
    ensure(blocks.len() <= 50, "over 50 blocks")?;
    let mut total = 0;
    for block in blocks {
        match block["type"].as_str() {
            Some("header") => {
                ensure(
                    block["text"]["type"] == "plain_text",
                    "header not plain_text",
                )?;
                ensure(chars(&block["text"]["text"]) <= 150, "header over 150")?;
                total += chars(&block["text"]["text"]);
            }
            Some("section") => {
                if let Some(text) = block.get("text") {
                    ensure(chars(&text["text"]) <= 3000, "section over 3000")?;
                    total += chars(&text["text"]);
                }
                if let Some(fields) = block.get("fields") {
                    let fields = fields.as_array().ok_or("fields not a list")?;
                    ensure(fields.len() <= 10, "over 10 fields")?;
                    for f in fields {
                        ensure(chars(&f["text"]) <= 2000, "field over 2000")?;
                        total += chars(&f["text"]);
                    }
                }
            }
            other => return Err(format!("unexpected block {other:?}")),
        }
    }
    ensure(total <= 12_000, "blocks over 12000 characters")?;
    // Untrusted text can never form a Slack special token.
    let all = message.to_string();
    for token in ["<!", "<@", "<#"] {
        ensure(!all.contains(token), "a special token formed")?;
    }
    Ok(())
}

/// Discord execute-webhook limits (§2.1, §2.2, §2.3).
pub fn discord(message: &Value) -> Result<(), String> {
    ensure(
        message["allowed_mentions"] == serde_json::json!({"parse": []}),
        "allowed_mentions not {parse: []}",
    )?;
    ensure(chars(&message["content"]) <= 2000, "content over 2000")?;
    let embeds = message["embeds"].as_array().ok_or("embeds missing")?;
    ensure(
        !embeds.is_empty() || message.get("content").is_some(),
        "empty message",
    )?;
    ensure(embeds.len() <= 10, "over 10 embeds")?;
    let mut total = 0;
    for e in embeds {
        ensure(chars(&e["title"]) <= 256, "title over 256")?;
        ensure(chars(&e["description"]) <= 4096, "description over 4096")?;
        ensure(chars(&e["footer"]["text"]) <= 2048, "footer over 2048")?;
        total += chars(&e["title"]) + chars(&e["description"]) + chars(&e["footer"]["text"]);
        let fields = e["fields"].as_array().map_or(&[][..], |f| f.as_slice());
        ensure(fields.len() <= 25, "over 25 fields")?;
        for f in fields {
            ensure(
                chars(&f["name"]) <= 256 && chars(&f["name"]) > 0,
                "field name",
            )?;
            ensure(
                chars(&f["value"]) <= 1024 && chars(&f["value"]) > 0,
                "field value",
            )?;
            total += chars(&f["name"]) + chars(&f["value"]);
        }
        if let Some(color) = e.get("color") {
            ensure(color.as_u64().is_some_and(|c| c <= 0xFF_FFFF), "color")?;
        }
    }
    ensure(total <= 6000, "embeds over 6000 characters")?;
    if let Some(name) = message.get("username") {
        let lower = name.as_str().unwrap_or("").to_lowercase();
        ensure((1..=80).contains(&chars(name)), "username length")?;
        ensure(
            !lower.contains("clyde") && !lower.contains("discord"),
            "username word",
        )?;
    }
    let all = message.to_string();
    for ping in ["@everyone", "@here"] {
        ensure(!all.contains(ping), "a mention formed")?;
    }
    // Every `@` is defused: `<@123>` and `<@&456>` cannot form.
    let defused = all.matches('@').count() == all.matches("@\u{200B}").count();
    ensure(defused, "an @ not followed by a zero-width space")?;
    Ok(())
}

/// PagerDuty Events API v2 event rules (§3).
pub fn pagerduty(event: &Value) -> Result<(), String> {
    ensure(
        serde_json::to_vec(event).unwrap().len() <= 512_000,
        "event over 512000 bytes",
    )?;
    ensure(event["routing_key"].is_string(), "routing_key missing")?;
    let key = &event["dedup_key"];
    ensure(chars(key) <= 255, "dedup_key over 255")?;
    match event["event_action"].as_str() {
        Some("trigger") => {
            let p = &event["payload"];
            ensure(chars(&p["summary"]) > 0, "summary missing")?;
            ensure(chars(&p["summary"]) <= 1024, "summary over 1024")?;
            ensure(chars(&p["source"]) > 0, "source missing")?;
            ensure(
                matches!(
                    p["severity"].as_str(),
                    Some("critical" | "error" | "warning" | "info")
                ),
                "severity",
            )
        }
        Some("acknowledge" | "resolve") => ensure(chars(key) > 0, "resolve without dedup_key"),
        _ => Err("event_action".into()),
    }
}

/// Twilio create-Message form rules (§4.1): To, one of From/MessagingServiceSid, Body ≤ 1600.
pub fn twilio(form: &[(String, String)]) -> Result<(), String> {
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    ensure(get("To").is_some(), "To missing")?;
    ensure(
        get("From").is_some() != get("MessagingServiceSid").is_some(),
        "exactly one of From and MessagingServiceSid",
    )?;
    let body = get("Body").ok_or("Body missing")?;
    ensure(
        !body.is_empty() && body.chars().count() <= 1600,
        "Body length",
    )?;
    Ok(())
}
