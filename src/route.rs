//! Routing: the user's `[[rules]]` applied to a classified alert.
//!
//! Rules are tried in order; every condition a rule gives must hold for it to match. The first
//! matching rule decides, unless it says `continue = true`, in which case its actions apply and
//! the next rules are tried too. An alert that no rule sends anywhere goes to
//! `[defaults] sinks`; one a rule drops goes nowhere (and is logged at debug by the caller).
//! Regexes are compiled once, when the configuration is loaded.

use herald_bridges::{Alert, Kind, Severity};
use regex::Regex;
use serde::Deserialize;
use toml::Spanned;

use crate::classify::Message;
use crate::config::{ConfigError, Locate};

/// `[[rules]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    name: String,
    #[serde(default, rename = "match")]
    conditions: RawMatch,
    severity: Option<Severity>,
    #[serde(default)]
    sinks: Vec<Spanned<String>>,
    #[serde(default)]
    drop: bool,
    #[serde(default, rename = "continue")]
    keep_going: bool,
}

/// `match = { ... }` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    kind: Option<Spanned<String>>,
    subject: Option<Spanned<String>>,
}

/// A validated rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The rule's name, reported in the alert's `rule` field.
    pub name: String,
    kind: Option<Kind>,
    subject: Option<Regex>,
    severity: Option<Severity>,
    sinks: Vec<String>,
    drop: bool,
    keep_going: bool,
}

impl RawRule {
    /// Checks kinds and regexes and resolves sink names with `sink`.
    pub(crate) fn validate(
        self,
        key: &str,
        sink: &dyn Fn(&Spanned<String>) -> Result<String, ConfigError>,
        locate: &dyn Locate,
    ) -> Result<Rule, ConfigError> {
        let kind = match &self.conditions.kind {
            None => None,
            Some(name) => Some(
                Kind::ALL
                    .into_iter()
                    .find(|k| k.as_str() == name.get_ref())
                    .ok_or_else(|| {
                        let kinds: Vec<_> = Kind::ALL.iter().map(|k| k.as_str()).collect();
                        locate.at(
                            name.span(),
                            &format!("{key}.match.kind"),
                            format!(
                                "unknown kind {:?} (one of: {})",
                                name.get_ref(),
                                kinds.join(", ")
                            ),
                        )
                    })?,
            ),
        };
        let subject = match &self.conditions.subject {
            None => None,
            Some(pattern) => Some(Regex::new(pattern.get_ref()).map_err(|e| {
                locate.at(
                    pattern.span(),
                    &format!("{key}.match.subject"),
                    format!("invalid regex: {e}"),
                )
            })?),
        };
        let sinks = self.sinks.iter().map(sink).collect::<Result<Vec<_>, _>>()?;
        Ok(Rule {
            name: self.name,
            kind,
            subject,
            severity: self.severity,
            sinks,
            drop: self.drop,
            keep_going: self.keep_going,
        })
    }
}

impl Rule {
    /// Whether every condition holds.
    pub fn matches(&self, message: &Message, alert: &Alert) -> bool {
        self.kind.is_none_or(|k| k == alert.kind)
            && self
                .subject
                .as_ref()
                .is_none_or(|re| re.is_match(&message.subject))
    }
}

/// Where an alert goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The alert with the rules' actions applied (`rule`, `severity`).
    pub alert: Alert,
    /// The sinks to deliver to, each once, in the order named.
    pub sinks: Vec<String>,
    /// A rule said `drop = true`.
    pub dropped: bool,
}

/// Everything needed to turn a raw message into a routing decision.
#[derive(Debug, Clone)]
pub struct Router {
    rules: Vec<Rule>,
    default_sinks: Vec<String>,
}

impl Router {
    /// The router for a validated configuration.
    pub fn new(rules: Vec<Rule>, default_sinks: Vec<String>) -> Router {
        Router {
            rules,
            default_sinks,
        }
    }

    /// Parses, classifies and routes one message; `truncated` says `raw` is only its start.
    pub fn decide(&self, raw: &[u8], truncated: bool) -> Decision {
        let message = crate::classify::parse(raw, truncated);
        let alert = crate::classify::classify(&message);
        route(&self.rules, &self.default_sinks, &message, alert)
    }
}

/// Applies `rules` to `alert`.
pub fn route(
    rules: &[Rule],
    default_sinks: &[String],
    message: &Message,
    mut alert: Alert,
) -> Decision {
    let mut sinks: Vec<String> = Vec::new();
    for rule in rules {
        if !rule.matches(message, &alert) {
            continue;
        }
        if alert.rule.is_none() {
            alert.rule = Some(rule.name.clone());
        }
        if let Some(severity) = rule.severity {
            alert.severity = severity;
        }
        if rule.drop {
            return Decision {
                alert,
                sinks: Vec::new(),
                dropped: true,
            };
        }
        for sink in &rule.sinks {
            if !sinks.contains(sink) {
                sinks.push(sink.clone());
            }
        }
        if !rule.keep_going {
            break;
        }
    }
    if sinks.is_empty() {
        sinks = default_sinks.to_vec();
    }
    Decision {
        alert,
        sinks,
        dropped: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn config(rules: &str) -> Config {
        let text = format!(
            "[imap]\nhost = \"127.0.0.1\"\ntls = \"none\"\nusername = \"u\"\npassword = \"p\"\n\
             [defaults]\nsinks = [\"d\"]\n\
             [sinks.a]\ntype = \"console\"\n[sinks.b]\ntype = \"console\"\n[sinks.d]\ntype = \"console\"\n{rules}"
        );
        Config::parse(Path::new("t.toml"), &text, &|_| None).unwrap_or_else(|e| panic!("{e}"))
    }

    fn decide(config: &Config, kind: Kind, subject: &str) -> Decision {
        let message = Message {
            subject: subject.into(),
            ..Message::default()
        };
        let mut alert = Alert::sample();
        alert.kind = kind;
        route(&config.rules, &config.default_sinks, &message, alert)
    }

    #[test]
    fn first_match_decides() {
        let c = config(
            "[[rules]]\nname = \"cron\"\nmatch = { kind = \"cron\" }\nseverity = \"critical\"\nsinks = [\"a\"]\n\
             [[rules]]\nname = \"all\"\nsinks = [\"b\"]\n",
        );
        let d = decide(&c, Kind::Cron, "x");
        assert_eq!(
            (d.sinks, d.alert.rule.as_deref()),
            (vec!["a".to_string()], Some("cron"))
        );
        assert_eq!(d.alert.severity, Severity::Critical);
        let d = decide(&c, Kind::Other, "x");
        assert_eq!(
            (d.sinks, d.alert.rule.as_deref()),
            (vec!["b".to_string()], Some("all"))
        );
    }

    #[test]
    fn continue_accumulates_and_drop_stops() {
        let c = config(
            "[[rules]]\nname = \"tee\"\nsinks = [\"a\"]\ncontinue = true\n\
             [[rules]]\nname = \"noise\"\nmatch = { subject = \"(?i)^logwatch\" }\ndrop = true\n\
             [[rules]]\nname = \"rest\"\nsinks = [\"b\", \"a\"]\n",
        );
        assert_eq!(decide(&c, Kind::Other, "hello").sinks, vec!["a", "b"]);
        let d = decide(&c, Kind::Other, "Logwatch for web01");
        assert!(d.dropped && d.sinks.is_empty());
    }

    #[test]
    fn unrouted_goes_to_defaults() {
        let c =
            config("[[rules]]\nname = \"sev\"\nmatch = { kind = \"cron\" }\nseverity = \"info\"\n");
        assert_eq!(decide(&c, Kind::Cron, "x").sinks, vec!["d"]);
    }

    #[test]
    fn bad_kind_and_regex_are_located() {
        let text = |m: &str| {
            format!(
                "[imap]\nhost = \"127.0.0.1\"\ntls = \"none\"\nusername = \"u\"\npassword = \"p\"\n[[rules]]\nname = \"r\"\nmatch = {m}\n"
            )
        };
        let e =
            Config::parse(Path::new("t"), &text("{ kind = \"cronn\" }"), &|_| None).unwrap_err();
        assert_eq!(
            (e.key.as_deref(), e.position),
            (Some("rules[0].match.kind"), Some((8, 18)))
        );
        let e = Config::parse(Path::new("t"), &text("{ subject = \"(\" }"), &|_| None).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("rules[0].match.subject"), "{e}");
        assert!(e.message.contains("invalid regex"), "{e}");
    }
}
