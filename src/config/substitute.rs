//! Pass 1 of loading: substitution over the spanned parse, before anything is deserialized.
//!
//! Every string value's `${NAME}` is replaced by the environment variable (`$${` is a literal
//! `${`), and every secret key's `*_file` twin is replaced by the key itself, holding the
//! file's contents. Guarantees: an unset variable, a twin given with its key, or an unreadable
//! file is an error located at its value, and the error never quotes a secret.

use std::borrow::Cow;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::spans::{join_key, Context};
use super::ConfigError;

/// The secret keys that may be given as a `*_file` twin instead, across all tables.
const SECRET_KEYS: &[&str] = &[
    "password",
    "token",
    "url",
    "webhook_url",
    "routing_key",
    "auth_token",
    "api_key_secret",
    "sasl_password",
    "secret",
    "access_token",
    "api_key",
    "user",
    "push_token",
];

/// Pass 1 over one table: `${NAME}` in strings, `*_file` twins of secret keys.
pub(super) fn substitute_table(
    ctx: &Context<'_>,
    table: &mut DeTable<'_>,
    prefix: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    for (key, value) in table.iter_mut() {
        let path = join_key(prefix, key.get_ref());
        substitute_value(ctx, value, &path, env)?;
    }
    let twins: Vec<String> = table
        .keys()
        .map(|k| k.get_ref().to_string())
        .filter(|k| {
            k.strip_suffix("_file")
                .is_some_and(|stem| SECRET_KEYS.contains(&stem))
        })
        .collect();
    for twin in twins {
        let Some((key, value)) = table.remove_entry(twin.as_str()) else {
            continue;
        };
        let stem = twin.trim_end_matches("_file").to_owned();
        let path = join_key(prefix, &twin);
        if table.contains_key(stem.as_str()) {
            return Err(ctx.error(
                key.span(),
                &path,
                format!("give either `{stem}` or `{twin}`, not both"),
            ));
        }
        let Some(file) = value.get_ref().as_str() else {
            return Err(ctx.error(value.span(), &path, "must be a file path (string)"));
        };
        let content = std::fs::read_to_string(file)
            .map_err(|e| ctx.error(value.span(), &path, format!("cannot read {file:?}: {e}")))?;
        let content = content.strip_suffix('\n').unwrap_or(&content);
        let content = content.strip_suffix('\r').unwrap_or(content).to_owned();
        table.insert(
            Spanned::new(key.span(), Cow::Owned(stem)),
            Spanned::new(value.span(), DeValue::String(Cow::Owned(content))),
        );
    }
    Ok(())
}

fn substitute_value(
    ctx: &Context<'_>,
    value: &mut Spanned<DeValue<'_>>,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    let span = value.span();
    match value.get_mut() {
        DeValue::String(text) if text.contains('$') => {
            let expanded = expand_env(text, env).map_err(|m| ctx.error(span, path, m))?;
            *text = Cow::Owned(expanded);
        }
        DeValue::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute_value(ctx, item, &format!("{path}[{i}]"), env)?;
            }
        }
        DeValue::Table(table) => substitute_table(ctx, table, path, env)?,
        _ => {}
    }
    Ok(())
}

/// Replaces each `${NAME}` with the variable's value, and `${NAME:-default}` with the value or,
/// when it is unset or empty, `default` (as a shell does); `$${` is a literal `${`.
fn expand_env(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('$') {
        let (before, from_dollar) = rest.split_at(start);
        out.push_str(before);
        if let Some(after) = from_dollar.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = from_dollar.strip_prefix("${") {
            let Some((inside, after_name)) = after.split_once('}') else {
                return Err("unterminated `${` (write `$${` for a literal `${`)".into());
            };
            let (name, default) = match inside.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inside, None),
            };
            let valid = !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err(format!("invalid environment variable name {name:?}"));
            }
            let value = match default {
                Some(default) => env(name)
                    .filter(|v| !v.is_empty())
                    .unwrap_or_else(|| default.to_owned()),
                None => env(name).ok_or_else(|| {
                    format!(
                        "environment variable {name} is not set (write ${{{name}:-DEFAULT}} for a default)"
                    )
                })?,
            };
            out.push_str(&value);
            rest = after_name;
        } else {
            out.push('$');
            rest = from_dollar.strip_prefix('$').unwrap_or_default();
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_expansion_forms() {
        let env = |n: &str| (n == "A").then(|| "1".to_owned());
        assert_eq!(expand_env("x${A}y", &env).unwrap(), "x1y");
        assert_eq!(expand_env("$${A} $5", &env).unwrap(), "${A} $5");
        assert!(expand_env("${A", &env).is_err());
        assert!(expand_env("${B}", &env)
            .unwrap_err()
            .contains("B is not set"));
        assert_eq!(
            expand_env("${A:-9}/${B:-x:y}/${B:-}", &env).unwrap(),
            "1/x:y/"
        );
        let empty = |n: &str| (n == "E").then(String::new);
        assert_eq!(expand_env("${E:-d}", &empty).unwrap(), "d");
        assert_eq!(expand_env("${E}", &empty).unwrap(), "");
    }
}
