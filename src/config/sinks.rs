//! `[sinks.NAME]`: the reader for one sink table, which takes out herald's own delivery-policy
//! keys ([`DeliveryPolicy`]) and hands the rest to the sink type that `type` names.
//!
//! Guarantees: the sink never sees the policy keys; a policy has `retry_min` above zero,
//! `retry_max` at least `retry_min` and `concurrency` in 1..=[`MAX_CONCURRENCY`]; every error, even one inside a sink's own keys, points
//! at the offending key (or, where that key cannot be found, at the sink's table).

use std::time::Duration;

use herald_bridges::SinkConfig;
use toml::de::DeValue;
use toml::Spanned;

use super::spans::{line_column, span_of_key, Context};
use super::ConfigError;

/// How herald delivers to and retries one sink: keys of `[sinks.NAME]` that herald reads
/// itself (the sink never sees them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryPolicy {
    /// The first retry's delay, and the floor of every later one.
    pub retry_min: Duration,
    /// The ceiling of the exponential backoff.
    pub retry_max: Duration,
    /// A row still undelivered this long after its alert was stored is dead-lettered.
    pub max_age: Duration,
    /// How many of the sink's deliveries may be in flight at once (1..=[`MAX_CONCURRENCY`]);
    /// it also bounds what a crash can repeat. Absent from the table, the sink type's
    /// [`default_concurrency`].
    pub concurrency: usize,
}

impl Default for DeliveryPolicy {
    /// 1 s → 5 min (Vector's and reliability.md G4's starting points); 24 h: an alert older
    /// than a day is news to no one, and Postfix's five days is far too long for a page.
    /// One delivery at a time: the choice that is right for every sink (order kept, nothing
    /// but the one in flight repeated by a crash); the reader gives each configured sink its
    /// type's [`default_concurrency`] instead.
    fn default() -> Self {
        DeliveryPolicy {
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            max_age: Duration::from_secs(24 * 3600),
            concurrency: 1,
        }
    }
}

/// The largest `concurrency`: far more than any receiver needs to hide its round trip, and few
/// enough that a crash repeats a handful of alerts, not a flood.
pub const MAX_CONCURRENCY: usize = 64;

/// A sink type's `concurrency` when its table does not set one.
///
/// HTTP sinks: 4. Each request is independent and the receiver orders nothing between them,
/// so four in flight hide the round trip (a webhook on a LAN, Slack across the internet)
/// roughly fourfold, while a crash repeats at most four confirmed alerts. Their `rate_limit`
/// is one bucket per sink that every request waits on, so pacing still holds for the total.
/// IRC and the console: 1. Their alerts share one connection or one stream, where two in
/// flight would buy no speed (the IRC flood bucket and a stdout write are the bottleneck) and
/// could interleave or swap lines that readers expect in order. Exec: 1, since the command
/// is the operator's own script, which may not expect to run beside itself.
pub fn default_concurrency(config: &SinkConfig) -> usize {
    // Exhaustive on purpose: a new sink type must decide.
    match config {
        SinkConfig::Webhook(_)
        | SinkConfig::Slack(_)
        | SinkConfig::Discord(_)
        | SinkConfig::PagerDuty(_)
        | SinkConfig::Twilio(_)
        | SinkConfig::Ntfy(_)
        | SinkConfig::Gotify(_)
        | SinkConfig::Pushover(_)
        | SinkConfig::Telegram(_)
        | SinkConfig::Matrix(_)
        | SinkConfig::Teams(_)
        | SinkConfig::Opsgenie(_) => 4,
        SinkConfig::Irc(_) | SinkConfig::Console(_) | SinkConfig::Exec(_) => 1,
    }
}

/// The `[sinks.NAME]` keys that are [`DeliveryPolicy`]'s durations.
const POLICY_KEYS: [&str; 3] = ["retry_min", "retry_max", "max_age"];

impl Context<'_> {
    /// Reads one `[sinks.NAME]` table: herald's delivery keys, then the rest by its `type`.
    pub(super) fn sink(
        &self,
        key: &str,
        value: Spanned<DeValue<'_>>,
    ) -> Result<(SinkConfig, DeliveryPolicy), ConfigError> {
        let span = value.span();
        let DeValue::Table(mut table) = value.into_inner() else {
            return Err(self.error(span, key, "must be a table"));
        };
        let mut policy = DeliveryPolicy::default();
        for name in POLICY_KEYS {
            let Some(value) = table.remove(name) else {
                continue;
            };
            let path = format!("{key}.{name}");
            let text = value.get_ref().as_str().ok_or_else(|| {
                self.error(
                    value.span(),
                    &path,
                    "must be a duration string such as \"30s\"",
                )
            })?;
            let duration = humantime::parse_duration(text).map_err(|e| {
                self.error(
                    value.span(),
                    &path,
                    format!("invalid duration {text:?}: {e}"),
                )
            })?;
            match name {
                "retry_min" => policy.retry_min = duration,
                "retry_max" => policy.retry_max = duration,
                _ => policy.max_age = duration,
            }
        }
        if policy.retry_min.is_zero() || policy.retry_max < policy.retry_min {
            let at =
                span_of_key(self.text, &format!("{key}.retry_max")).unwrap_or_else(|| span.clone());
            return Err(self.error(
                at,
                &format!("{key}.retry_max"),
                "must be at least retry_min, which must be above zero",
            ));
        }
        let concurrency = match table.remove("concurrency") {
            None => None,
            Some(value) => {
                let path = format!("{key}.concurrency");
                let n = value
                    .get_ref()
                    .as_integer()
                    .and_then(|i| usize::from_str_radix(i.as_str(), i.radix()).ok())
                    .filter(|n| (1..=MAX_CONCURRENCY).contains(n))
                    .ok_or_else(|| {
                        self.error(
                            value.span(),
                            &path,
                            format!("must be an integer from 1 to {MAX_CONCURRENCY}"),
                        )
                    })?;
                Some(n)
            }
        };
        let Some(type_value) = table.remove("type") else {
            return Err(self.error(
                span,
                key,
                format!(
                    "missing key `type` (one of: {})",
                    SinkConfig::TYPES.join(", ")
                ),
            ));
        };
        let type_span = type_value.span();
        let Some(type_name) = type_value.get_ref().as_str().map(str::to_owned) else {
            return Err(self.error(type_span, &format!("{key}.type"), "must be a string"));
        };
        let deserializer = toml::de::Deserializer::from(Spanned::new(span.clone(), table));
        let config = SinkConfig::deserialize_typed(&type_name, deserializer).map_err(|e| {
            let mut error = self.toml_error(&e);
            if e.message().starts_with("unknown variant") {
                error.position = Some(line_column(self.text, type_span.start));
                error.key = Some(format!("{key}.type"));
            }
            error
        })?;
        config.validate().map_err(|e| match e {
            herald_bridges::SinkError::Invalid {
                key: field,
                message,
            } => {
                let path = format!("{key}.{field}");
                let at = span_of_key(self.text, &path).unwrap_or_else(|| span.clone());
                self.error(at, &path, message)
            }
            other => self.error(span.clone(), key, other.to_string()),
        })?;
        policy.concurrency = concurrency.unwrap_or_else(|| default_concurrency(&config));
        Ok((config, policy))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{Config, ConfigError};

    fn parse(sinks: &str) -> Result<Config, ConfigError> {
        let text = format!(
            "[imap]\nhost = \"127.0.0.1\"\ntls = \"none\"\nusername = \"a\"\npassword = \"p\"\n{sinks}"
        );
        Config::parse(Path::new("herald.toml"), &text, &|_| None)
    }

    #[test]
    fn concurrency_defaults_by_type_and_is_bounded() {
        let config = parse(
            "[sinks.hook]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\n\
             [sinks.out]\ntype = \"console\"\n\
             [sinks.wide]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\nconcurrency = 64\n",
        )
        .unwrap();
        assert_eq!(config.delivery["hook"].concurrency, 4);
        assert_eq!(config.delivery["out"].concurrency, 1);
        assert_eq!(config.delivery["wide"].concurrency, 64);
        for bad in ["0", "65", "-1", "\"4\"", "2.5"] {
            let error = parse(&format!(
                "[sinks.hook]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\nconcurrency = {bad}\n"
            ))
            .unwrap_err();
            assert_eq!(
                (error.key.as_deref(), error.position),
                (Some("sinks.hook.concurrency"), Some((9, 15))),
                "{bad}: {error}"
            );
        }
    }
}
