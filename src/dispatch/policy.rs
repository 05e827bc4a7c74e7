//! The lifecycle keys (`group_by`, `group_wait`, `group_interval`, `repeat_interval`,
//! `resolve_after`): what they mean, their defaults, and how a rule overrides `[defaults]`.
//!
//! Guarantees: a [`Policy`] is complete (every key has a value) and its `group_by` names only
//! fields an alert has; a key left out of a rule inherits `[defaults]`, and a key left out of
//! `[defaults]` has the default below, so `config.example.toml` and this file say the same.

use std::collections::HashMap;
use std::time::Duration;

use herald_bridges::Alert;
use serde::{Deserialize, Deserializer};
use toml::Spanned;

use crate::error::{ConfigError, Locate};

/// A field of an alert that `group_by` may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupField {
    /// `kind`.
    Kind,
    /// `host`.
    Host,
    /// `user`.
    User,
    /// `command`.
    Command,
    /// `dedup_key`: the default, one problem per group.
    DedupKey,
    /// `rule`.
    Rule,
    /// `severity`.
    Severity,
    /// `account`.
    Account,
    /// `mailbox`.
    Mailbox,
    /// `from`.
    From,
}

impl GroupField {
    const ALL: [(&'static str, GroupField); 10] = [
        ("kind", GroupField::Kind),
        ("host", GroupField::Host),
        ("user", GroupField::User),
        ("command", GroupField::Command),
        ("dedup_key", GroupField::DedupKey),
        ("rule", GroupField::Rule),
        ("severity", GroupField::Severity),
        ("account", GroupField::Account),
        ("mailbox", GroupField::Mailbox),
        ("from", GroupField::From),
    ];

    fn parse(name: &str) -> Option<GroupField> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
    }

    fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, f)| *f == self)
            .map_or("?", |(n, _)| n)
    }

    /// The alert's value of this field; `-` where it has none.
    fn value(self, alert: &Alert) -> &str {
        fn text(v: &Option<String>) -> &str {
            v.as_deref().filter(|v| !v.is_empty()).unwrap_or("-")
        }
        match self {
            GroupField::Kind => alert.kind.as_str(),
            GroupField::Host => text(&alert.host),
            GroupField::User => text(&alert.user),
            GroupField::Command => text(&alert.command),
            GroupField::DedupKey => &alert.dedup_key,
            GroupField::Rule => text(&alert.rule),
            GroupField::Severity => alert.severity.as_str(),
            GroupField::Account => text(&alert.account),
            GroupField::Mailbox => text(&alert.mailbox),
            GroupField::From => text(&alert.from),
        }
    }
}

/// How dispatch treats the alerts of one rule (or of `[defaults]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The fields whose values make the group key.
    pub group_by: Vec<GroupField>,
    /// How long the first alert of a quiet group waits for others (0: it goes at once).
    pub group_wait: Duration,
    /// How often a group that has notified sends a digest of the problems that joined it.
    pub group_interval: Duration,
    /// How often a problem's folded repeats are reminded of (0: every repeat is sent).
    pub repeat_interval: Duration,
    /// How long a problem stays open without a new alert.
    pub resolve_after: Duration,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            group_by: vec![GroupField::DedupKey],
            group_wait: Duration::ZERO,
            group_interval: Duration::from_secs(60),
            repeat_interval: Duration::from_secs(4 * 3600),
            resolve_after: Duration::from_secs(24 * 3600),
        }
    }
}

impl Policy {
    /// The group key of `alert`: its values of `group_by`, joined by `:`. With the default
    /// `group_by = ["dedup_key"]` it is the `dedup_key` itself, so PagerDuty incidents keep
    /// the keys they had before grouping existed.
    pub fn group_key(&self, alert: &Alert) -> String {
        let mut key = String::new();
        for (i, field) in self.group_by.iter().enumerate() {
            if i > 0 {
                key.push(':');
            }
            key.push_str(field.value(alert));
        }
        key
    }
}

impl Policy {
    /// The keys in words, for `classify --explain`.
    pub fn describe(&self) -> String {
        let d = |d: Duration| humantime::format_duration(d).to_string();
        format!(
            "group_by {}; group_wait {}; group_interval {}; repeat_interval {}; resolve_after {}",
            self.group_by
                .iter()
                .map(|f| f.name())
                .collect::<Vec<_>>()
                .join(", "),
            d(self.group_wait),
            d(self.group_interval),
            d(self.repeat_interval),
            d(self.resolve_after)
        )
    }
}

/// The policy of each rule, and of alerts no rule decided.
#[derive(Debug, Clone, Default)]
pub struct Policies {
    /// `[defaults]`: for alerts without a rule, and for every key a rule leaves out.
    pub defaults: Policy,
    /// By rule name, for rules that override a key.
    pub rules: HashMap<String, Policy>,
}

impl Policies {
    /// The policy for an alert decided by `rule`.
    pub fn of(&self, rule: Option<&str>) -> &Policy {
        rule.and_then(|r| self.rules.get(r))
            .unwrap_or(&self.defaults)
    }
}

/// A humane duration (`"30s"`, `"4h"`), as written in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Humane(pub(crate) Duration);

impl<'de> Deserialize<'de> for Humane {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Humane, D::Error> {
        herald_bridges::sink::deserialize_duration(d).map(Humane)
    }
}

/// The lifecycle keys as a rule or `[defaults]` writes them; each may be left out.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawPolicy {
    pub(crate) group_by: Option<Spanned<Vec<Spanned<String>>>>,
    pub(crate) group_wait: Option<Humane>,
    pub(crate) group_interval: Option<Humane>,
    pub(crate) repeat_interval: Option<Humane>,
    pub(crate) resolve_after: Option<Humane>,
}

impl RawPolicy {
    /// Whether any key is given.
    pub(crate) fn is_empty(&self) -> bool {
        self.group_by.is_none()
            && self.group_wait.is_none()
            && self.group_interval.is_none()
            && self.repeat_interval.is_none()
            && self.resolve_after.is_none()
    }

    /// `base` with the keys given here; `key` is the table's name for errors.
    pub(crate) fn over(
        &self,
        base: &Policy,
        key: &str,
        locate: &dyn Locate,
    ) -> Result<Policy, ConfigError> {
        let group_by = match &self.group_by {
            None => base.group_by.clone(),
            Some(list) => {
                if list.get_ref().is_empty() {
                    return Err(locate.at(
                        list.span(),
                        &format!("{key}.group_by"),
                        "must name at least one field (the default is [\"dedup_key\"]: one problem per group)".into(),
                    ));
                }
                list.get_ref()
                    .iter()
                    .map(|name| {
                        GroupField::parse(name.get_ref()).ok_or_else(|| {
                            locate.at(
                                name.span(),
                                &format!("{key}.group_by"),
                                format!(
                                    "unknown field {:?}: group by any of {}",
                                    name.get_ref(),
                                    GroupField::ALL
                                        .iter()
                                        .map(|(n, _)| *n)
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                ),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?
            }
        };
        let pick = |given: Option<Humane>, inherited: Duration| given.map_or(inherited, |h| h.0);
        Ok(Policy {
            group_by,
            group_wait: pick(self.group_wait, base.group_wait),
            group_interval: pick(self.group_interval, base.group_interval),
            repeat_interval: pick(self.repeat_interval, base.repeat_interval),
            resolve_after: pick(self.resolve_after, base.resolve_after),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_group_key_is_the_dedup_key() {
        let alert = Alert::sample();
        assert_eq!(Policy::default().group_key(&alert), alert.dedup_key);
    }

    #[test]
    fn group_key_joins_the_fields_and_marks_missing_ones() {
        let mut alert = Alert::sample();
        alert.command = None;
        let policy = Policy {
            group_by: vec![GroupField::Kind, GroupField::Command, GroupField::Host],
            ..Policy::default()
        };
        assert_eq!(policy.group_key(&alert), "cron:-:web01.example.net");
    }
}
