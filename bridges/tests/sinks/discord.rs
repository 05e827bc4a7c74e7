use std::time::Duration;

use serde_json::json;

use super::fakes;
use super::limits;
use super::server::{refused_addr, Reply, Server};
use super::*;

const TOKEN: &str = "webhooktoken";

async fn discord(script: Vec<Reply>, extra: serde_json::Value) -> (Server, SinkConfig) {
    let server = Server::start(fakes::discord(TOKEN, script)).await;
    let mut table = json!({
        "webhook_url": server.url(&format!("/api/v10/webhooks/1/{TOKEN}")),
        "rate_limit": "off",
    });
    for (k, v) in extra.as_object().unwrap() {
        table[k] = v.clone();
    }
    (server, config("discord", table))
}

#[tokio::test]
async fn normal_alert_is_one_embed() {
    let (server, config) = discord(vec![], json!({"username": "herald", "thread_id": "777"})).await;
    assert_eq!(
        build(&config).deliver(&Alert::sample()).await,
        Outcome::Delivered
    );
    let request = &server.requests()[0];
    assert_eq!(request.query(), "wait=true&thread_id=777");
    let body = request.json();
    assert_eq!(body, config.render(&Alert::sample()));
    assert_eq!(body["username"], "herald");
    assert_eq!(body["allowed_mentions"], json!({"parse": []}));
    let embed = &body["embeds"][0];
    assert_eq!(
        embed["title"],
        "WARNING: cron on web01.example.net: /usr/local/bin/backup.sh"
    );
    assert_eq!(embed["color"], 0xE6_7E22);
    assert_eq!(
        embed["fields"][0],
        json!({"name": "Host", "value": "web01.example.net", "inline": true})
    );
    let description = embed["description"].as_str().unwrap();
    assert!(
        description.starts_with("backup.sh: error") && description.contains("\n\n```\nbackup.sh")
    );
}

#[tokio::test]
async fn hostile_alert_cannot_ping_and_fits() {
    let (server, config) = discord(vec![], json!({})).await;
    assert_eq!(
        build(&config).deliver(&hostile_alert()).await,
        Outcome::Delivered
    );
    let body = server.requests()[0].json();
    let embed = &body["embeds"][0];
    assert_eq!(embed["color"], 0x99_2D22);
    let text = body.to_string();
    assert!(text.contains("Ünïcødé 日本語 🔥"));
    assert_eq!(text.matches("```").count(), 2, "only our own fences");
    let title = embed["title"].as_str().unwrap();
    assert!(
        title.starts_with("CRITICAL: Cron \\<root@\u{200B}web01> @\u{200B}everyone"),
        "{title}"
    );
    assert!(title.ends_with("Injected: line"), "one line: {title}");
}

#[tokio::test]
async fn rate_limit_body_and_bucket_headers_are_honoured() {
    let (server, config) = discord(
        vec![
            Reply::json(429, json!({"message": "You are being rate limited.", "retry_after": 0.6, "global": false}))
                .header("retry-after", "1")
                .header("x-ratelimit-scope", "user"),
            // A success that empties the bucket: the next request waits for the reset.
            Reply::json(200, json!({"id": "2"}))
                .header("x-ratelimit-remaining", "0")
                .header("x-ratelimit-reset-after", "0.5"),
        ],
        json!({}),
    )
    .await;
    let sink = build(&config);
    let first = sink.deliver(&Alert::sample()).await;
    assert_eq!(
        retry_after(&first),
        Some(Duration::from_millis(600)),
        "{first:?}"
    );
    assert_eq!(sink.deliver(&Alert::sample()).await, Outcome::Delivered);
    assert_eq!(sink.deliver(&Alert::sample()).await, Outcome::Delivered);
    let requests = server.requests();
    assert!(
        gap(&requests, 0, 1) >= Duration::from_millis(590),
        "{:?}",
        gap(&requests, 0, 1)
    );
    assert!(
        gap(&requests, 1, 2) >= Duration::from_millis(490),
        "{:?}",
        gap(&requests, 1, 2)
    );
}

#[tokio::test]
async fn server_error_then_success() {
    let (server, config) = discord(vec![Reply::new(502, "bad gateway")], json!({})).await;
    let sink = build(&config);
    assert!(is_retry(&sink.deliver(&Alert::sample()).await));
    assert_eq!(sink.deliver(&Alert::sample()).await, Outcome::Delivered);
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn unknown_webhook_is_rejected_once() {
    let server = Server::start(fakes::discord(TOKEN, vec![])).await;
    let config = config(
        "discord",
        json!({"webhook_url": server.url("/api/v10/webhooks/1/deleted")}),
    );
    let outcome = build(&config).deliver(&Alert::sample()).await;
    assert!(is_rejected(&outcome), "{outcome:?}");
    assert!(reason(&outcome).contains("10015") && reason(&outcome).contains("gone"));
    assert!(
        !reason(&outcome).contains("deleted"),
        "no URL in the reason"
    );
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn invalid_form_body_is_rejected() {
    let (_server, config) = discord(
        vec![Reply::json(
            400,
            json!({"code": 50035, "message": "Invalid Form Body"}),
        )],
        json!({}),
    )
    .await;
    let outcome = build(&config).deliver(&Alert::sample()).await;
    assert!(
        is_rejected(&outcome) && reason(&outcome).contains("50035"),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn connection_refused_is_retried() {
    let addr = refused_addr().await;
    let config = config(
        "discord",
        json!({"webhook_url": format!("http://{addr}/api/v10/webhooks/1/{TOKEN}")}),
    );
    assert!(is_retry(&build(&config).deliver(&Alert::sample()).await));
}

#[tokio::test]
async fn template_replaces_the_description() {
    let (server, config) =
        discord(vec![], json!({"template": "{{ user }} on **{{ host }}**"})).await;
    let mut alert = Alert::sample();
    alert.user = Some("@everyone".into());
    assert_eq!(build(&config).deliver(&alert).await, Outcome::Delivered);
    let body = server.requests()[0].json();
    assert_eq!(
        body["embeds"][0]["description"],
        "@\u{200B}everyone on **web01.example.net**"
    );
}

#[test]
fn bad_configs_are_refused() {
    for (table, key) in [
        (
            json!({"webhook_url": "https://discord.com/api/v10/webhooks/1/t", "username": "Discord Bot"}),
            "username",
        ),
        (
            json!({"webhook_url": "https://discord.com/api/v10/webhooks/1/t", "thread_id": "abc"}),
            "thread_id",
        ),
        (json!({"webhook_url": "discord.com/api"}), "webhook_url"),
    ] {
        let config = SinkConfig::deserialize_typed("discord", table).unwrap();
        let error = config.validate().unwrap_err().to_string();
        assert!(error.starts_with(key), "{error}");
    }
    assert!(
        SinkConfig::deserialize_typed("discord", json!({"webhook_url": "x", "colour": 1})).is_err()
    );
}

/// The member lines of a digest's description: what follows the summary.
fn member_lines(body: &serde_json::Value) -> Vec<String> {
    let description = body["embeds"][0]["description"].as_str().unwrap();
    let (summary, list) = description.split_once("\n\n").unwrap();
    assert!(!summary.is_empty());
    list.lines().map(str::to_owned).collect()
}

#[tokio::test]
async fn digest_lists_every_member() {
    let (server, config) = discord(vec![], json!({})).await;
    let alert = digest_alert(12, 0);
    assert_eq!(build(&config).deliver(&alert).await, Outcome::Delivered);
    let body = server.requests()[0].json();
    assert_eq!(body, config.render(&alert));
    let embed = &body["embeds"][0];
    assert_eq!(
        embed["title"],
        "WARNING: 12 problems: cron /usr/local/bin/backup.sh"
    );
    let description = embed["description"].as_str().unwrap();
    assert!(description.starts_with("web01, web02, web03, … (12 hosts)\n\n"));
    let expected: Vec<String> = (1..=12).map(member_line).collect();
    assert_eq!(member_lines(&body), expected);
}

#[tokio::test]
async fn a_long_digest_names_what_fits_and_counts_the_rest() {
    let (server, config) = discord(vec![], json!({})).await;
    // 50 lines of 62 characters fit the description's 4096: only the unlisted are counted.
    let alert = digest_alert(50, 150);
    assert_eq!(build(&config).deliver(&alert).await, Outcome::Delivered);
    let lines = member_lines(&server.requests()[0].json());
    assert_eq!(lines.len(), 51);
    assert_eq!(lines[49], member_line(50));
    assert_eq!(more_count(&lines[50]).unwrap(), 150);
}

#[tokio::test]
async fn hostile_digest_cannot_ping_and_fits() {
    let (server, config) = discord(vec![], json!({"username": "herald"})).await;
    let alert = hostile_digest();
    assert_eq!(build(&config).deliver(&alert).await, Outcome::Delivered);
    let body = server.requests()[0].json();
    limits::discord(&body).unwrap();
    let lines = member_lines(&body);
    let listed = lines.len() as u64 - 1;
    assert!(listed >= 10, "{lines:?}");
    assert_eq!(listed + more_count(lines.last().unwrap()).unwrap(), 250);
    assert_eq!(
        body.to_string().matches("```").count(),
        0,
        "no fence formed"
    );
}

#[tokio::test]
async fn a_template_still_lists_a_digests_members() {
    let (server, config) = discord(vec![], json!({"template": "**{{ title }}**"})).await;
    let alert = digest_alert(3, 0);
    assert_eq!(build(&config).deliver(&alert).await, Outcome::Delivered);
    let body = server.requests()[0].json();
    assert_eq!(
        body["embeds"][0]["description"],
        format!(
            "**3 problems: cron /usr/local/bin/backup.sh**\n\n{}",
            [1, 2, 3].map(member_line).join("\n")
        )
    );
}

#[tokio::test]
async fn recovery_is_green_and_resolved() {
    let (server, config) = discord(vec![], json!({})).await;
    let alert = recovery_alert();
    assert_eq!(build(&config).deliver(&alert).await, Outcome::Delivered);
    let body = server.requests()[0].json();
    assert_eq!(body, config.render(&alert));
    let embed = &body["embeds"][0];
    assert_eq!(
        embed["title"],
        "RESOLVED: cron on web01.example.net: /usr/local/bin/backup.sh succeeded"
    );
    assert_eq!(embed["color"], herald_bridges::discord::COLOR_RESOLVED);
    assert_eq!(embed["description"], "backup.sh: done", "no excerpt");
}

#[test]
fn reminder_shows_its_repeats() {
    let config = config(
        "discord",
        json!({"webhook_url": "https://discord.com/api/v10/webhooks/1/t"}),
    );
    let body = config.render(&reminder_alert());
    let fields = body["embeds"][0]["fields"].as_array().unwrap();
    assert!(
        fields.contains(&json!({"name": "Repeats", "value": "37 since 03:00", "inline": true})),
        "{fields:?}"
    );
}

#[test]
fn markdown_from_mail_is_shown_not_rendered() {
    let mut alert = Alert::sample();
    alert.title = "click [here](https://evil.example) ||secret|| **now**".into();
    alert.summary = "# Heading\n> quote\n-# small\n[login](https://evil.example/x)".into();
    alert.host = Some("[web01](https://evil.example)".into());
    let body = herald_bridges::discord::payload(&alert, None, None);
    let embed = &body["embeds"][0];
    let title = embed["title"].as_str().unwrap();
    assert!(
        title.ends_with(r"click \[here\](https://evil.example) \|\|secret\|\| \*\*now\*\*"),
        "{title}"
    );
    let description = embed["description"].as_str().unwrap();
    assert!(
        description
            .starts_with("\\# Heading\n\\> quote\n\\-# small\n\\[login\\](https://evil.example/x)"),
        "{description}"
    );
    // No masked link anywhere: every `](` from mail has its bracket escaped.
    let text = body.to_string();
    assert!(!text.replace(r"\\]", "").contains("]("), "{text}");
    assert_eq!(
        embed["fields"][0]["value"],
        r"\[web01\](https://evil.example)"
    );
}
