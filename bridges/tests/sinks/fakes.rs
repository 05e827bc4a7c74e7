//! Fake APIs that behave like the real ones: they check the request (method, path, auth,
//! content type, shape and limits) and answer a bad one as the real API documents; a good one
//! gets the next scripted reply, or the API's documented success.

use serde_json::json;

use super::limits;
use super::server::{Reply, Request};

pub type Handler = Box<dyn Fn(&Request, usize) -> Reply + Send + Sync>;

fn scripted(script: &[Reply], index: usize, success: Reply) -> Reply {
    script.get(index).cloned().unwrap_or(success)
}

/// Slack incoming webhook at `/services/T000/B000/<token>` (§1.1): errors are plain strings.
pub fn slack_webhook(token: &'static str, script: Vec<Reply>) -> Handler {
    Box::new(move |req, index| {
        if req.method != "POST" || req.path() != format!("/services/T000/B000/{token}") {
            return Reply::new(404, "no_service");
        }
        if !req
            .header("content-type")
            .unwrap_or_default()
            .starts_with("application/json")
        {
            return Reply::new(400, "invalid_payload");
        }
        let Ok(body) = serde_json::from_slice(&req.body) else {
            return Reply::new(400, "invalid_payload");
        };
        if let Err(why) = limits::slack(&body) {
            return Reply::new(400, format!("invalid_payload ({why})"));
        }
        scripted(&script, index, Reply::new(200, "ok"))
    })
}

/// Slack `chat.postMessage` at `/api/chat.postMessage` (§1.2): HTTP 200 with `ok:false` on
/// errors.
pub fn slack_api(token: &'static str, channel: &'static str, script: Vec<Reply>) -> Handler {
    Box::new(move |req, index| {
        let error = |e: &str| Reply::json(200, json!({"ok": false, "error": e}));
        if req.path() != "/api/chat.postMessage" {
            return Reply::new(404, "");
        }
        if req.header("authorization").as_deref() != Some(&format!("Bearer {token}")) {
            return error("invalid_auth");
        }
        if !req
            .header("content-type")
            .unwrap_or_default()
            .starts_with("application/json")
        {
            return error("invalid_arguments");
        }
        let Ok(body) = serde_json::from_slice::<serde_json::Value>(&req.body) else {
            return error("invalid_json");
        };
        if body["channel"] != channel {
            return error("channel_not_found");
        }
        if body.get("token").is_some() {
            return error("invalid_arguments");
        }
        if limits::slack(&body).is_err() {
            return error("invalid_blocks");
        }
        scripted(
            &script,
            index,
            Reply::json(
                200,
                json!({"ok": true, "channel": channel, "ts": "1503435956.000247"}),
            ),
        )
    })
}

/// Discord execute webhook at `/api/v10/webhooks/1/<token>` (§2).
pub fn discord(token: &'static str, script: Vec<Reply>) -> Handler {
    Box::new(move |req, index| {
        if req.path() != format!("/api/v10/webhooks/1/{token}") {
            return Reply::json(404, json!({"code": 10015, "message": "Unknown Webhook"}));
        }
        if !req.query().split('&').any(|p| p == "wait=true") {
            return Reply::new(500, "test fake: herald must send wait=true");
        }
        if !req
            .header("user-agent")
            .unwrap_or_default()
            .starts_with("DiscordBot (")
        {
            return Reply::new(403, "bad user agent");
        }
        let Ok(body) = serde_json::from_slice::<serde_json::Value>(&req.body) else {
            return Reply::json(400, json!({"code": 50035, "message": "Invalid Form Body"}));
        };
        if let Err(why) = limits::discord(&body) {
            return Reply::json(
                400,
                json!({"code": 50035, "message": format!("Invalid Form Body: {why}")}),
            );
        }
        scripted(
            &script,
            index,
            Reply::json(
                200,
                json!({"id": "1", "type": 0, "content": "", "embeds": body["embeds"]}),
            )
            .header("x-ratelimit-limit", "5")
            .header("x-ratelimit-remaining", "4")
            .header("x-ratelimit-reset-after", "1.0"),
        )
    })
}

/// PagerDuty Events API v2 at `/v2/enqueue` (§3).
pub fn pagerduty(routing_key: &'static str, script: Vec<Reply>) -> Handler {
    Box::new(move |req, index| {
        let invalid = |e: &str| {
            Reply::json(
                400,
                json!({"status": "invalid event", "message": "Event object is invalid", "errors": [e]}),
            )
        };
        if req.path() != "/v2/enqueue" {
            return Reply::new(404, "");
        }
        let Ok(event) = serde_json::from_slice::<serde_json::Value>(&req.body) else {
            return invalid("Invalid JSON");
        };
        if event["routing_key"] != routing_key {
            return invalid("Invalid routing key");
        }
        if let Err(why) = limits::pagerduty(&event) {
            return invalid(&why);
        }
        scripted(
            &script,
            index,
            Reply::json(
                202,
                json!({"status": "success", "message": "Event processed", "dedup_key": event["dedup_key"]}),
            ),
        )
    })
}

/// Parses a form body.
pub fn form(req: &Request) -> Vec<(String, String)> {
    form_urlencoded::parse(&req.body).into_owned().collect()
}

/// Twilio's test numbers: invalid and unsubscribed recipients.
pub const TWILIO_INVALID_TO: &str = "+15005550001";
pub const TWILIO_STOPPED_TO: &str = "+15005550004";

/// Twilio create Message at `/2010-04-01/Accounts/<sid>/Messages.json` (§4), Basic auth.
pub fn twilio(
    account: &'static str,
    user: &'static str,
    password: &'static str,
    script: Vec<Reply>,
) -> Handler {
    use base64::Engine as _;
    Box::new(move |req, index| {
        let error = |status: u16, code: u32, message: &str| {
            Reply::json(
                status,
                json!({"code": code, "message": message, "more_info": format!("https://www.twilio.com/docs/errors/{code}"), "status": status}),
            )
        };
        if req.path() != format!("/2010-04-01/Accounts/{account}/Messages.json") {
            return error(404, 20404, "The requested resource was not found");
        }
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        if req.header("authorization").as_deref() != Some(expected.as_str()) {
            return error(401, 20003, "Authenticate");
        }
        if req.header("content-type").as_deref() != Some("application/x-www-form-urlencoded") {
            return error(400, 21000, "bad content type");
        }
        let form = form(req);
        if let Err(why) = limits::twilio(&form) {
            return error(400, 21602, &why);
        }
        let to = form
            .iter()
            .find(|(k, _)| k == "To")
            .map(|(_, v)| v.clone())
            .unwrap();
        if to == TWILIO_INVALID_TO {
            return error(
                400,
                21211,
                &format!("The 'To' number {to} is not a valid phone number."),
            );
        }
        if to == TWILIO_STOPPED_TO {
            return error(400, 21610, "Attempt to send to unsubscribed recipient");
        }
        scripted(
            &script,
            index,
            Reply::json(
                201,
                json!({"sid": format!("SM{index:032}"), "status": "queued", "to": to, "error_code": null, "error_message": null, "num_segments": "1"}),
            ),
        )
    })
}
