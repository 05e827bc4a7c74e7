//! The log line formats: `text` (logfmt) and `json` (one object per line), chosen by
//! `HERALD_LOG_FORMAT` or `[log] format` (the environment wins).
//!
//! Both formats carry the same fields in the same order: `time` (RFC 3339, UTC,
//! microseconds), `level` (`ERROR` … `TRACE`), `msg`, then the event's own fields. The text
//! format is strict logfmt as Go's `log/slog` writes it: a value is bare only if it is not
//! empty and holds no space, `=`, `"`, `\` or control character; any other value is quoted,
//! with `\"`, `\\`, `\n`, `\r`, `\t` and `\u00XX` escapes, so every line splits into
//! `key=value` pairs unambiguously, whatever a mail's subject held. The JSON format is one
//! serde_json object per line (integers, floats and booleans as JSON values, the rest as
//! strings), so no content can break a line either.
//!
//! The format is a process-wide setting read per event, so the logger can be installed before
//! the configuration is read (errors while reading it are logged too) and the configuration's
//! choice applied once it is loaded. Which events are written, and that secrets never are, is
//! decided before this module: by the filters in `cli` and by what the callers log.

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU8, Ordering};

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The environment variable that chooses the format, over the configuration.
pub const FORMAT_VAR: &str = "HERALD_LOG_FORMAT";

/// A log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// logfmt.
    #[default]
    Text,
    /// JSON Lines.
    Json,
}

impl LogFormat {
    /// Parses a `HERALD_LOG_FORMAT` value.
    pub fn parse(value: &str) -> Result<LogFormat, String> {
        match value {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "{FORMAT_VAR} must be \"text\" or \"json\", not {other:?}"
            )),
        }
    }
}

/// The format in use: 0 text, 1 JSON.
static FORMAT: AtomicU8 = AtomicU8::new(0);
/// Whether `HERALD_LOG_FORMAT` chose it (then the configuration does not).
static FROM_ENV: AtomicU8 = AtomicU8::new(0);

/// Sets the format from `HERALD_LOG_FORMAT`, if it is set; an invalid value is an error.
pub fn use_environment() -> Result<(), String> {
    match std::env::var(FORMAT_VAR) {
        Ok(value) if !value.is_empty() => {
            set(LogFormat::parse(&value)?);
            FROM_ENV.store(1, Ordering::Relaxed);
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Applies the configuration's `[log] format`, unless the environment chose one.
pub fn use_config(format: LogFormat) {
    if FROM_ENV.load(Ordering::Relaxed) == 0 {
        set(format);
    }
}

fn set(format: LogFormat) {
    FORMAT.store(u8::from(format == LogFormat::Json), Ordering::Relaxed);
}

fn current() -> LogFormat {
    if FORMAT.load(Ordering::Relaxed) == 1 {
        LogFormat::Json
    } else {
        LogFormat::Text
    }
}

/// The `tracing-subscriber` event formatter that writes the current format.
#[derive(Debug, Clone, Copy, Default)]
pub struct Formatter;

impl<S, N> FormatEvent<S, N> for Formatter
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let level = event.metadata().level().as_str();
        let line = match current() {
            LogFormat::Text => text_line(&time, level, &fields),
            LogFormat::Json => json_line(&time, level, &fields),
        };
        writer.write_str(&line)?;
        writer.write_char('\n')
    }
}

/// One field's value, typed where JSON has a type for it.
#[derive(Debug, Clone, PartialEq)]
enum FieldValue {
    Text(String),
    Int(i64),
    Uint(u64),
    Float(f64),
    Bool(bool),
}

/// An event's message and fields, in the order the event gave them.
#[derive(Debug, Default)]
struct Fields {
    message: String,
    fields: Vec<(&'static str, FieldValue)>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: FieldValue) {
        let name = field.name();
        if name == "message" {
            self.message = match value {
                FieldValue::Text(text) => text,
                other => display(&other),
            };
        } else if !name.starts_with("log.") {
            // `log.target`, `log.module_path`, …: tracing-log's bookkeeping for records from
            // the `log` crate, not information.
            self.fields.push((name, value));
        }
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `%x` fields arrive here as a wrapper whose Debug is x's Display.
        self.put(field, FieldValue::Text(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, FieldValue::Text(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, FieldValue::Int(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, FieldValue::Uint(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, FieldValue::Float(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, FieldValue::Bool(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, FieldValue::Text(value.to_string()));
    }
}

fn display(value: &FieldValue) -> String {
    match value {
        FieldValue::Text(text) => text.clone(),
        FieldValue::Int(n) => n.to_string(),
        FieldValue::Uint(n) => n.to_string(),
        FieldValue::Float(x) => x.to_string(),
        FieldValue::Bool(b) => b.to_string(),
    }
}

fn text_line(time: &str, level: &str, fields: &Fields) -> String {
    let mut line = String::with_capacity(128);
    line.push_str("time=");
    line.push_str(time);
    line.push_str(" level=");
    line.push_str(level);
    line.push_str(" msg=");
    push_logfmt_value(&mut line, &fields.message);
    for (name, value) in &fields.fields {
        line.push(' ');
        line.push_str(name);
        line.push('=');
        push_logfmt_value(&mut line, &display(value));
    }
    line
}

/// Appends `value` bare if logfmt allows it, else quoted and escaped.
fn push_logfmt_value(line: &mut String, value: &str) {
    let bare = !value.is_empty()
        && !value
            .chars()
            .any(|c| c == ' ' || c == '=' || c == '"' || c == '\\' || c.is_control());
    if bare {
        line.push_str(value);
        return;
    }
    line.push('"');
    for c in value.chars() {
        match c {
            '"' => line.push_str("\\\""),
            '\\' => line.push_str("\\\\"),
            '\n' => line.push_str("\\n"),
            '\r' => line.push_str("\\r"),
            '\t' => line.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(line, "\\u{:04x}", u32::from(c));
            }
            c => line.push(c),
        }
    }
    line.push('"');
}

fn json_line(time: &str, level: &str, fields: &Fields) -> String {
    let mut object = Map::new();
    object.insert("time".into(), Value::from(time));
    object.insert("level".into(), Value::from(level));
    object.insert("msg".into(), Value::from(fields.message.as_str()));
    for (name, value) in &fields.fields {
        let value = match value {
            FieldValue::Text(text) => Value::from(text.as_str()),
            FieldValue::Int(n) => Value::from(*n),
            FieldValue::Uint(n) => Value::from(*n),
            // NaN and infinities have no JSON form: written as text.
            FieldValue::Float(x) => serde_json::Number::from_f64(*x)
                .map_or_else(|| Value::from(x.to_string()), Value::Number),
            FieldValue::Bool(b) => Value::from(*b),
        };
        object.insert((*name).to_owned(), value);
    }
    Value::Object(object).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(message: &str, pairs: &[(&'static str, FieldValue)]) -> Fields {
        Fields {
            message: message.to_owned(),
            fields: pairs.to_vec(),
        }
    }

    #[test]
    fn logfmt_quotes_what_needs_quoting() {
        let line = text_line(
            "2026-12-02T15:00:00.000000Z",
            "WARN",
            &fields(
                "Delivery failed, will retry.",
                &[
                    ("sink", FieldValue::Text("hook".into())),
                    ("error", FieldValue::Text("say \"hi\"\\\n\tx=1\u{7}".into())),
                    ("empty", FieldValue::Text(String::new())),
                    ("n", FieldValue::Uint(3)),
                    ("host", FieldValue::Text("wéb01".into())),
                ],
            ),
        );
        assert_eq!(
            line,
            "time=2026-12-02T15:00:00.000000Z level=WARN msg=\"Delivery failed, will retry.\" \
             sink=hook error=\"say \\\"hi\\\"\\\\\\n\\tx=1\\u0007\" empty=\"\" n=3 host=wéb01"
        );
    }

    #[test]
    fn json_is_one_object_with_typed_values() {
        let line = json_line(
            "t",
            "INFO",
            &fields(
                "Alert\ndelivered.",
                &[
                    ("id", FieldValue::Int(-4)),
                    ("ok", FieldValue::Bool(true)),
                    ("x", FieldValue::Float(f64::NAN)),
                ],
            ),
        );
        assert!(!line.contains('\n'));
        let value: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["msg"], "Alert\ndelivered.");
        assert_eq!(value["id"], -4);
        assert_eq!(value["ok"], true);
        assert_eq!(value["x"], "NaN");
        assert_eq!(value["level"], "INFO");
    }

    #[test]
    fn environment_values() {
        assert_eq!(LogFormat::parse("json"), Ok(LogFormat::Json));
        assert_eq!(LogFormat::parse("text"), Ok(LogFormat::Text));
        assert!(LogFormat::parse("JSON").unwrap_err().contains(FORMAT_VAR));
    }
}
