use std::time::Duration;

use serde_json::json;

use super::fakes;
use super::limits;
use super::server::{refused_addr, Reply, Server};
use super::*;

const TOKEN: &str = "hooktoken";

fn webhook(server_url: String, rate: &str) -> SinkConfig {
    config(
        "slack",
        json!({"webhook_url": server_url, "rate_limit": rate, "timeout": "5s"}),
    )
}

async fn webhook_server(script: Vec<Reply>) -> (Server, SinkConfig) {
    let server = Server::start(fakes::slack_webhook(TOKEN, script)).await;
    let url = server.url(&format!("/services/T000/B000/{TOKEN}"));
    (server, webhook(url, "off"))
}

#[tokio::test]
async fn normal_alert_is_delivered_as_documented() {
    let (server, config) = webhook_server(vec![]).await;
    let outcome = build(&config).deliver(&Alert::sample()).await;
    assert_eq!(outcome, Outcome::Delivered);
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let body = requests[0].json();
    assert_eq!(
        body,
        config.render(&Alert::sample()),
        "render is exactly what is sent"
    );
    assert_eq!(
        body["text"],
        ":warning: WARNING: cron on web01.example.net: /usr/local/bin/backup.sh"
    );
    assert_eq!(body["blocks"][0]["type"], "header");
    let fields = body["blocks"][1]["fields"].to_string();
    for fact in [
        "Host: web01.example.net",
        "User: root",
        "Command: /usr/local/bin/backup.sh",
    ] {
        assert!(fields.contains(fact), "{fact} in {fields}");
    }
    assert!(body["blocks"][3]["text"]["text"]
        .as_str()
        .unwrap()
        .starts_with("```\nbackup.sh: error"));
    assert!(body.get("channel").is_none());
}

#[tokio::test]
async fn hostile_alert_is_escaped_and_within_limits() {
    let (server, config) = webhook_server(vec![]).await;
    let alert = hostile_alert();
    let outcome = build(&config).deliver(&alert).await;
    assert_eq!(outcome, Outcome::Delivered, "the fake checks every limit");
    let body = server.requests()[0].json();
    let text = body.to_string();
    assert!(text.contains("&lt;!channel&gt;") && text.contains("&amp;amp;"));
    assert!(text.contains("Ünïcødé 日本語 🔥"));
    // Only our own two fences survive.
    assert_eq!(text.matches("```").count(), 2, "{text}");
    assert!(body["blocks"][0]["text"]["text"]
        .as_str()
        .unwrap()
        .starts_with("CRITICAL: Cron &lt;root@web01&gt;"));
    assert!(body["blocks"][3]["text"]["text"]
        .as_str()
        .unwrap()
        .contains("more lines]"));
}

#[tokio::test]
async fn mail_text_cannot_format() {
    let (server, config) = webhook_server(vec![]).await;
    let mut alert = Alert::sample();
    alert.summary = "*urgent* _call_ ~now~ `rm`".into();
    alert.host = Some("*web01*".into());
    assert_eq!(build(&config).deliver(&alert).await, Outcome::Delivered);
    let body = server.requests()[0].json();
    // Everything from the mail outside the code block is plain_text, where mrkdwn's
    // unescapable `*`, `_`, `~` do nothing.
    for block in body["blocks"].as_array().unwrap() {
        let texts: Vec<&serde_json::Value> = block["fields"]
            .as_array()
            .map(|f| f.iter().collect())
            .unwrap_or_else(|| vec![&block["text"]]);
        for text in texts {
            let shown = text["text"].as_str().unwrap_or_default();
            if text["type"] == "mrkdwn" {
                assert!(shown.starts_with("```"), "mail text in mrkdwn: {shown}");
            }
        }
    }
    assert!(body.to_string().contains("*urgent* _call_ ~now~"));
}

#[tokio::test]
async fn retry_after_holds_the_next_request() {
    let (server, config) = webhook_server(vec![
        Reply::new(429, "rate limited").header("retry-after", "1")
    ])
    .await;
    let sink = build(&config);
    let first = sink.deliver(&Alert::sample()).await;
    assert!(
        is_retry(&first) && retry_after(&first) == Some(Duration::from_secs(1)),
        "{first:?}"
    );
    assert_eq!(sink.deliver(&Alert::sample()).await, Outcome::Delivered);
    let requests = server.requests();
    assert!(
        gap(&requests, 0, 1) >= Duration::from_millis(990),
        "{:?}",
        gap(&requests, 0, 1)
    );
}

#[tokio::test]
async fn default_pacing_is_one_per_second() {
    let server = Server::start(fakes::slack_webhook(TOKEN, vec![])).await;
    let config = config(
        "slack",
        json!({"webhook_url": server.url(&format!("/services/T000/B000/{TOKEN}"))}),
    );
    let sink = build(&config);
    for _ in 0..2 {
        assert_eq!(sink.deliver(&Alert::sample()).await, Outcome::Delivered);
    }
    assert!(gap(&server.requests(), 0, 1) >= Duration::from_millis(990));
}

#[tokio::test]
async fn server_error_then_success() {
    let (server, config) = webhook_server(vec![Reply::new(500, "rollup_error")]).await;
    let sink = build(&config);
    let first = sink.deliver(&Alert::sample()).await;
    assert!(
        is_retry(&first) && reason(&first).contains("rollup_error"),
        "{first:?}"
    );
    assert_eq!(sink.deliver(&Alert::sample()).await, Outcome::Delivered);
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn permanent_errors_are_rejected_once() {
    for (status, body) in [
        (404, "channel_not_found"),
        (410, "channel_is_archived"),
        (403, "action_prohibited"),
    ] {
        let (server, config) = webhook_server(vec![Reply::new(status, body)]).await;
        let outcome = build(&config).deliver(&Alert::sample()).await;
        assert!(
            is_rejected(&outcome) && reason(&outcome).contains(body),
            "{outcome:?}"
        );
        assert_eq!(server.requests().len(), 1);
    }
}

#[tokio::test]
async fn connection_refused_is_retried() {
    let addr = refused_addr().await;
    let config = webhook(format!("http://{addr}/services/T000/B000/{TOKEN}"), "off");
    let outcome = build(&config).deliver(&Alert::sample()).await;
    assert!(
        is_retry(&outcome) && reason(&outcome).starts_with("cannot connect"),
        "{outcome:?}"
    );
}

mod bot {
    use super::*;

    const BOT_TOKEN: &str = "xoxb-bot-token";

    async fn api(script: Vec<Reply>) -> (Server, SinkConfig) {
        let server = Server::start(fakes::slack_api(BOT_TOKEN, "C0123", script)).await;
        let config = config(
            "slack",
            json!({"token": BOT_TOKEN, "channel": "C0123", "api_url": server.url("/api"), "rate_limit": "off"}),
        );
        (server, config)
    }

    #[tokio::test]
    async fn posts_with_bearer_token_and_channel() {
        let (server, config) = api(vec![]).await;
        assert_eq!(
            build(&config).deliver(&hostile_alert()).await,
            Outcome::Delivered
        );
        let request = &server.requests()[0];
        assert_eq!(
            request.header("content-type").unwrap(),
            "application/json; charset=utf-8"
        );
        assert_eq!(request.json()["channel"], "C0123");
        assert_eq!(request.json(), config.render(&hostile_alert()));
    }

    #[tokio::test]
    async fn ok_false_is_read_from_a_200() {
        let (_server, config) = api(vec![Reply::json(
            200,
            json!({"ok": false, "error": "not_in_channel"}),
        )])
        .await;
        let outcome = build(&config).deliver(&Alert::sample()).await;
        assert!(
            is_rejected(&outcome) && reason(&outcome).contains("not_in_channel"),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn rate_limited_then_delivered() {
        let (server, config) = api(vec![Reply::json(
            429,
            json!({"ok": false, "error": "ratelimited"}),
        )
        .header("retry-after", "1")])
        .await;
        let sink = build(&config);
        let first = sink.deliver(&Alert::sample()).await;
        assert_eq!(retry_after(&first), Some(Duration::from_secs(1)));
        assert_eq!(sink.deliver(&Alert::sample()).await, Outcome::Delivered);
        assert!(gap(&server.requests(), 0, 1) >= Duration::from_millis(990));
    }

    #[tokio::test]
    async fn wrong_token_is_rejected() {
        let server = Server::start(fakes::slack_api(BOT_TOKEN, "C0123", vec![])).await;
        let config = config(
            "slack",
            json!({"token": "xoxb-wrong", "channel": "C0123", "api_url": server.url("/api")}),
        );
        let outcome = build(&config).deliver(&Alert::sample()).await;
        assert!(is_rejected(&outcome) && reason(&outcome).contains("invalid_auth"));
    }

    #[tokio::test]
    async fn template_replaces_the_main_text_with_escaped_values() {
        let (server, _) = api(vec![]).await;
        let config = config(
            "slack",
            json!({"token": BOT_TOKEN, "channel": "C0123", "api_url": server.url("/api"),
                   "template": "*{{ host }}* ran `{{ command }}` as {{ user }}"}),
        );
        let mut alert = Alert::sample();
        alert.user = Some("<!channel>".into());
        assert_eq!(build(&config).deliver(&alert).await, Outcome::Delivered);
        let body = server.requests()[0].json();
        assert_eq!(
            body["blocks"][2]["text"]["text"],
            "*web01.example.net* ran `/usr/local/bin/backup.sh` as &lt;!channel&gt;"
        );
        assert_eq!(body["blocks"].as_array().unwrap().len(), 3);
    }
}

/// The last block's text: where a digest's member list goes.
fn last_section(body: &serde_json::Value) -> String {
    let blocks = body["blocks"].as_array().unwrap();
    blocks.last().unwrap()["text"]["text"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn digest_lists_every_member() {
    let (server, config) = webhook_server(vec![]).await;
    let alert = digest_alert(12, 0);
    assert_eq!(build(&config).deliver(&alert).await, Outcome::Delivered);
    let body = server.requests()[0].json();
    assert_eq!(
        body,
        config.render(&alert),
        "render is exactly what is sent"
    );
    assert_eq!(
        body["blocks"][0]["text"]["text"],
        "WARNING: 12 problems: cron /usr/local/bin/backup.sh"
    );
    assert_eq!(
        body["blocks"][2]["text"]["text"],
        "web01, web02, web03, … (12 hosts)"
    );
    let expected: Vec<String> = (1..=12).map(member_line).collect();
    assert_eq!(last_section(&body), expected.join("\n"));
}

#[tokio::test]
async fn a_long_digest_names_what_fits_and_counts_the_rest() {
    let (server, config) = webhook_server(vec![]).await;
    let alert = digest_alert(50, 150);
    assert_eq!(build(&config).deliver(&alert).await, Outcome::Delivered);
    let list = last_section(&server.requests()[0].json());
    let lines: Vec<&str> = list.lines().collect();
    let listed = lines.len() - 1;
    assert!(
        listed > 10 && listed < 50,
        "{listed} of 50 in 3000 characters"
    );
    for (i, line) in lines[..listed].iter().enumerate() {
        assert_eq!(*line, member_line(i + 1));
    }
    assert_eq!(more_count(lines[listed]).unwrap(), 200 - listed as u64);
}

#[tokio::test]
async fn hostile_digest_is_escaped_and_within_limits() {
    let (server, config) = webhook_server(vec![]).await;
    let alert = hostile_digest();
    let outcome = build(&config).deliver(&alert).await;
    assert_eq!(outcome, Outcome::Delivered, "the fake checks every limit");
    let body = server.requests()[0].json();
    limits::slack(&body).unwrap();
    let list = last_section(&body);
    assert!(list.contains("&lt;!channel&gt;") && !list.contains("<!channel>"));
    let lines: Vec<&str> = list.lines().collect();
    let listed = lines.len() as u64 - 1;
    assert!(listed >= 10, "{list}");
    assert_eq!(listed + more_count(lines.last().unwrap()).unwrap(), 250);
    assert_eq!(
        body.to_string().matches("```").count(),
        0,
        "no fence formed"
    );
}

#[tokio::test]
async fn recovery_is_a_resolved_message() {
    let (server, config) = webhook_server(vec![]).await;
    let alert = recovery_alert();
    assert_eq!(build(&config).deliver(&alert).await, Outcome::Delivered);
    let body = server.requests()[0].json();
    assert_eq!(body, config.render(&alert));
    let title = "cron on web01.example.net: /usr/local/bin/backup.sh succeeded";
    assert_eq!(
        body["text"],
        format!(":white_check_mark: RESOLVED: {title}")
    );
    assert_eq!(
        body["blocks"][0]["text"]["text"],
        format!("RESOLVED: {title}")
    );
    assert!(!body.to_string().contains("```"), "no excerpt: {body}");
}

#[test]
fn reminder_shows_its_repeats() {
    let config = webhook("https://hooks.slack.com/services/T0/B0/x".into(), "off");
    let body = config.render(&reminder_alert());
    let fields = body["blocks"][1]["fields"].to_string();
    assert!(fields.contains("Repeats: 37 since 03:00"), "{fields}");
}
