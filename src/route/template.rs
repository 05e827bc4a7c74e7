//! A rule's `title`, `summary` and `dedup_key` templates: the minijinja environment they are
//! compiled in, the variables they may use, and what they see when rendered.
//!
//! Guarantees: a template that does not compile, or that names a variable that does not
//! exist, is a configuration error located at its value; output is never HTML-escaped
//! (escaping is each sink's business). The limits that rendered text is cut to are here too.

use std::sync::Arc;

use herald_bridges::Alert;
use serde::Serialize;
use toml::Spanned;

use crate::error::{ConfigError, Locate};

/// A rendered title's limit: one line a person reads at a glance; sinks cut further for their
/// medium (Slack headers stop at 150).
pub const TITLE_MAX_CHARS: usize = 300;

/// A rendered summary's limit: PagerDuty's `summary` field holds 1024 characters.
pub const SUMMARY_MAX_CHARS: usize = 1000;

/// A rendered dedup key's limit: PagerDuty's `dedup_key` holds 255 characters.
pub const DEDUP_KEY_MAX_CHARS: usize = 255;

/// A rule's templates, compiled once.
#[derive(Clone)]
pub(super) struct Templates {
    /// Holds the templates named `title`, `summary` and `dedup_key` that the rule gives.
    pub(super) env: Arc<minijinja::Environment<'static>>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.env.templates().map(|(name, _)| name).collect();
        write!(f, "Templates({})", names.join(", "))
    }
}

/// What a template sees: every alert field and the recipients.
#[derive(Serialize)]
pub(super) struct TemplateContext<'a> {
    #[serde(flatten)]
    pub(super) alert: &'a Alert,
    pub(super) to: &'a [String],
    /// Given explicitly: the alert leaves it out of its serialization when false.
    pub(super) resolve: bool,
}

pub(super) fn template_environment() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    // Output goes to alert fields, never to HTML: escaping is each sink's business.
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env
}

/// The variables a template may use: the alert's fields (taken from its serialization, so a
/// field added to the model is available at once) and `to`.
fn template_variables() -> Vec<String> {
    let mut names = vec!["to".to_owned(), "resolve".to_owned()];
    if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(Alert::sample()) {
        names.extend(fields.keys().cloned());
    }
    names.sort();
    names.dedup();
    names
}

/// Adds template `name` to `env`: a syntax error or an unknown variable is a config error.
pub(super) fn compile_template(
    env: &mut minijinja::Environment<'static>,
    name: &'static str,
    source: &Spanned<String>,
    key: &str,
    locate: &dyn Locate,
) -> Result<(), ConfigError> {
    let error = |message: String| locate.at(source.span(), key, message);
    env.add_template_owned(name, source.get_ref().clone())
        .map_err(|e| error(format!("template does not compile: {e}")))?;
    let template = env
        .get_template(name)
        .map_err(|e| error(format!("template does not compile: {e}")))?;
    // A misspelt variable would otherwise render as nothing, silently, on every alert.
    let known = template_variables();
    let mut unknown: Vec<String> = template
        .undeclared_variables(false)
        .into_iter()
        .filter(|v| !known.contains(v) && env.globals().all(|(g, _)| g != v))
        .collect();
    unknown.sort();
    if let Some(first) = unknown.first() {
        return Err(error(format!(
            "unknown variable `{first}` in template (available: {})",
            known.join(", ")
        )));
    }
    Ok(())
}
