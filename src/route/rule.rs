//! A rule: `[[rules]]` as written ([`RawRule`]), its validation into a [`Rule`], and the
//! rule's actions.
//!
//! Guarantees: a [`Rule`] exists only once its name, conditions, sinks and templates have all
//! been checked, and a rule with `drop = true` never also names sinks or `continue`. Applying a
//! rule ([`Rule::act`]) never fails: a template that fails keeps the text it would replace.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use herald_bridges::text::one_line;
use herald_bridges::{Alert, Severity};
use serde::Deserialize;
use toml::Spanned;

use super::condition::{Condition, RawMatch};
use super::template::{
    compile_template, template_environment, TemplateContext, Templates, DEDUP_KEY_MAX_CHARS,
    SUMMARY_MAX_CHARS, TITLE_MAX_CHARS,
};
use super::window::Window;
use crate::classify::Message;
use crate::dispatch::policy::{Humane, RawPolicy};
use crate::error::{ConfigError, Locate};

/// `[[rules]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    name: Spanned<String>,
    #[serde(default, rename = "match")]
    conditions: RawMatch,
    severity: Option<Severity>,
    sinks: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    drop: bool,
    #[serde(rename = "continue")]
    keep_going: Option<Spanned<bool>>,
    #[serde(default)]
    resolve: bool,
    title: Option<Spanned<String>>,
    summary: Option<Spanned<String>>,
    dedup_key: Option<Spanned<String>>,
    // The lifecycle keys, read by dispatch (see `dispatch::policy`); serde cannot flatten
    // them into a table that denies unknown keys, hence one field each.
    group_by: Option<Spanned<Vec<Spanned<String>>>>,
    group_wait: Option<Humane>,
    group_interval: Option<Humane>,
    repeat_interval: Option<Humane>,
    resolve_after: Option<Humane>,
}

/// A validated rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The rule's name, reported in the alert's `rule` field.
    pub name: String,
    /// All must hold; cheapest first.
    conditions: Vec<Condition>,
    severity: Option<Severity>,
    pub(super) sinks: Vec<String>,
    pub(super) drop: bool,
    pub(super) keep_going: bool,
    resolve: bool,
    templates: Option<Templates>,
}

impl Rule {
    /// Whether what this rule matches goes to `[defaults] sinks`: it names no sinks of its
    /// own, does not drop, and does not pass the alert on (`continue`).
    pub fn falls_to_defaults(&self) -> bool {
        self.sinks.is_empty() && !self.drop && !self.keep_going
    }
}

impl RawRule {
    /// The rule's name and its lifecycle keys, taken out for dispatch.
    pub(crate) fn take_policy(&mut self) -> (String, RawPolicy) {
        let policy = RawPolicy {
            group_by: self.group_by.take(),
            group_wait: self.group_wait.take(),
            group_interval: self.group_interval.take(),
            repeat_interval: self.repeat_interval.take(),
            resolve_after: self.resolve_after.take(),
        };
        (self.name.get_ref().clone(), policy)
    }

    /// Checks kinds, severities, globs, regexes and templates, resolves sink names with
    /// `sink` and window names in `windows`; every error carries the offending value's
    /// location.
    pub(crate) fn validate(
        self,
        key: &str,
        sink: &dyn Fn(&Spanned<String>) -> Result<String, ConfigError>,
        windows: &BTreeMap<String, Window>,
        locate: &dyn Locate,
    ) -> Result<Rule, ConfigError> {
        if self.name.get_ref().trim().is_empty() {
            return Err(locate.at(
                self.name.span(),
                &format!("{key}.name"),
                "must not be empty: `--explain` and the alert's `rule` field show it".into(),
            ));
        }
        let conditions = self
            .conditions
            .validate(&format!("{key}.match"), windows, locate)?;
        let keep_going = self.keep_going.as_ref().is_some_and(|k| *k.get_ref());
        if self.drop {
            if let Some(k) = self.keep_going.as_ref().filter(|k| *k.get_ref()) {
                return Err(locate.at(
                    k.span(),
                    &format!("{key}.continue"),
                    "a rule with drop = true ends the evaluation; continue = true would have no effect".into(),
                ));
            }
            if let Some(s) = self.sinks.as_ref().filter(|s| !s.get_ref().is_empty()) {
                return Err(locate.at(
                    s.span(),
                    &format!("{key}.sinks"),
                    "a rule with drop = true delivers nothing; its sinks would never be used"
                        .into(),
                ));
            }
        }
        let sinks = match &self.sinks {
            None => Vec::new(),
            Some(list) => list
                .get_ref()
                .iter()
                .map(sink)
                .collect::<Result<Vec<_>, _>>()?,
        };
        let mut env: Option<minijinja::Environment<'static>> = None;
        for (name, source) in [
            ("title", &self.title),
            ("summary", &self.summary),
            ("dedup_key", &self.dedup_key),
        ] {
            let Some(source) = source else { continue };
            let env = env.get_or_insert_with(template_environment);
            compile_template(env, name, source, &format!("{key}.{name}"), locate)?;
        }
        Ok(Rule {
            name: self.name.into_inner(),
            conditions,
            severity: self.severity,
            sinks,
            drop: self.drop,
            keep_going,
            resolve: self.resolve,
            templates: env.map(|env| Templates { env: Arc::new(env) }),
        })
    }
}

impl Rule {
    /// Whether every condition holds at `now` (the instant `during` and `not_during` test).
    pub fn matches(&self, message: &Message, alert: &Alert, now: DateTime<Utc>) -> bool {
        self.conditions.iter().all(|c| c.holds(message, alert, now))
    }

    /// The first condition that does not hold at `now`.
    pub(super) fn first_failure(
        &self,
        message: &Message,
        alert: &Alert,
        now: DateTime<Utc>,
    ) -> Option<&Condition> {
        self.conditions
            .iter()
            .find(|c| !c.holds(message, alert, now))
    }

    /// For `--explain`: the window conditions that held at `now`, up to the first condition
    /// that did not (the ones matching tested), each as `during night: yes (now ...)`.
    pub(super) fn held_windows(
        &self,
        message: &Message,
        alert: &Alert,
        now: DateTime<Utc>,
    ) -> Vec<String> {
        self.conditions
            .iter()
            .take_while(|c| c.holds(message, alert, now))
            .filter_map(|c| c.window_note(now))
            .collect()
    }

    /// Applies this rule's actions (other than routing) to `alert`.
    pub(super) fn act(&self, message: &Message, alert: &mut Alert) {
        alert.rule = Some(self.name.clone());
        if let Some(severity) = self.severity {
            alert.severity = severity;
        }
        if self.resolve {
            alert.resolve = true;
        }
        let Some(templates) = &self.templates else {
            return;
        };
        let context = minijinja::Value::from_serialize(TemplateContext {
            alert,
            to: &message.to,
            resolve: alert.resolve,
        });
        let render = |name: &str, max: usize| -> Option<String> {
            let template = templates.env.get_template(name).ok()?;
            match template.render(&context) {
                Ok(text) => {
                    let text = one_line(&text, max);
                    if text.is_empty() {
                        tracing::warn!(
                            rule = %self.name,
                            template = name,
                            "Rule template rendered nothing, keeping the default text."
                        );
                        return None;
                    }
                    Some(text)
                }
                Err(error) => {
                    tracing::warn!(
                        rule = %self.name,
                        template = name,
                        %error,
                        "Rule template failed, keeping the default text."
                    );
                    None
                }
            }
        };
        // Rendered from one snapshot, then assigned: no template sees another's output.
        let title = render("title", TITLE_MAX_CHARS);
        let summary = render("summary", SUMMARY_MAX_CHARS);
        let dedup_key = render("dedup_key", DEDUP_KEY_MAX_CHARS);
        if let Some(title) = title {
            alert.title = title;
        }
        if let Some(summary) = summary {
            alert.summary = summary;
        }
        if let Some(dedup_key) = dedup_key {
            alert.dedup_key = dedup_key;
        }
    }
}
