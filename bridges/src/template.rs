//! Per-sink text templates (minijinja): a sink's `template` key replaces the main text of its
//! message (Slack's and Discord's body text, PagerDuty's summary, the SMS text).
//!
//! The template sees every [`Alert`] field (`title`, `host`, `body`, `facts`, `severity`, …).
//! Guarantees: a template that does not compile is refused when the configuration is read;
//! every string the template receives has already been escaped for the sink's medium (so a
//! template may use the medium's markup, and mail content still cannot ping anyone or close
//! a code block); the sink still enforces its length limits on the output; a template that
//! fails at render time (e.g. a filter applied to a missing value) makes the sink fall back to
//! its default text rather than drop the alert.

use std::fmt;

use serde::{Deserialize, Deserializer};

use crate::Alert;

/// A compiled-checked template source.
#[derive(Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Template({} chars)", self.source.chars().count())
    }
}

fn environment() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    // Output goes to JSON or form fields, never to HTML: escaping is the sink's business.
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.set_keep_trailing_newline(false);
    env
}

impl Template {
    /// Compiles `source`, returning the syntax error on failure.
    pub fn new(source: impl Into<String>) -> Result<Template, String> {
        let source = source.into();
        environment()
            .template_from_str(&source)
            .map_err(|e| format!("template does not compile: {e}"))?;
        Ok(Template { source })
    }

    /// Renders the template for `alert`, every string of which first goes through `escape`.
    pub fn render(&self, alert: &Alert, escape: &dyn Fn(&str) -> String) -> Result<String, String> {
        let mut context = serde_json::to_value(alert).map_err(|e| e.to_string())?;
        escape_strings(&mut context, escape);
        environment()
            .render_str(&self.source, context)
            .map_err(|e| format!("template failed: {e}"))
    }

    /// Renders, or logs why not and returns `None` (the caller then uses its default text).
    pub fn render_or_default(
        &self,
        sink: &'static str,
        alert: &Alert,
        escape: &dyn Fn(&str) -> String,
    ) -> Option<String> {
        match self.render(alert, escape) {
            Ok(text) => Some(text),
            Err(error) => {
                tracing::warn!(sink, %error, "Template failed, using the default text.");
                None
            }
        }
    }
}

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Template::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

fn escape_strings(value: &mut serde_json::Value, escape: &dyn Fn(&str) -> String) {
    match value {
        serde_json::Value::String(text) => *text = escape(text),
        serde_json::Value::Array(items) => {
            for item in items {
                escape_strings(item, escape);
            }
        }
        serde_json::Value::Object(map) => {
            for item in map.values_mut() {
                escape_strings(item, escape);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_alert_fields_escaped() {
        let t = Template::new("{{ severity | upper }} {{ host }}: {{ summary }}").unwrap();
        let mut alert = Alert::sample();
        alert.summary = "<b>".into();
        let out = t.render(&alert, &|s| s.replace('<', "&lt;")).unwrap();
        assert_eq!(out, "WARNING web01.example.net: &lt;b>");
    }

    #[test]
    fn bad_syntax_is_refused() {
        assert!(Template::new("{{ title").is_err());
        assert!(Template::new("{% if %}").is_err());
    }

    #[test]
    fn render_errors_fall_back() {
        // Unknown filters and lookups on undefined values fail at render time.
        for source in ["{{ title | nosuchfilter }}", "{{ facts.missing.deeper }}"] {
            let t = Template::new(source).unwrap();
            let out = t.render_or_default("test", &Alert::sample(), &|s| s.into());
            assert!(out.is_none(), "{source}: {out:?}");
        }
    }
}
