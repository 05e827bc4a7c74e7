//! The manual page herald(1), generated from the command line's own definition (so it cannot
//! drift from `--help`) plus the configuration reference, which is `config.example.toml`
//! itself: every key with its default. `herald man` prints it; `docs/herald.1` is a committed
//! copy that a test keeps equal to it, and the Debian package installs it.

use std::io::Write as _;

use clap_mangen::roff::{bold, italic, roman, Roff};

/// The annotated example configuration: the reference for every key.
const CONFIG_REFERENCE: &str = include_str!("../config.example.toml");

/// The page, in roff.
pub fn render() -> anyhow::Result<Vec<u8>> {
    let command = crate::cli::command();
    // No date: the page is the same for the same version, so the committed copy can be checked.
    let man = clap_mangen::Man::new(command.clone()).date("");
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;

    let mut roff = Roff::new();
    roff.control("SH", ["COMMANDS"]);
    for sub in command.get_subcommands() {
        commands(&mut roff, "herald", sub);
    }
    roff.control("SH", ["CONFIGURATION"]);
    roff.text([
        roman("herald reads one TOML file: the one "),
        bold("-c"),
        roman(" names, else "),
        bold("$HERALD_CONFIG"),
        roman(", else "),
        italic("./herald.toml"),
        roman(", else "),
        italic("/etc/herald/herald.toml"),
        roman(". "),
        bold("herald check"),
        roman(" validates it. Every key, with its default:"),
    ]);
    roff.control("PP", []).control("EX", []);
    for line in CONFIG_REFERENCE.lines() {
        roff.text([roman(line)]);
    }
    roff.control("EE", []);
    roff.control("SH", ["ENVIRONMENT"]);
    for (name, what) in [
        (
            "HERALD_CONFIG",
            "The configuration file, when -c is not given.",
        ),
        (
            "HERALD_LOG",
            "The log filter (a tracing EnvFilter: info, debug, herald=debug,...); default info.",
        ),
    ] {
        roff.control("TP", [])
            .text([bold(name)])
            .text([roman(what)]);
    }
    roff.control("SH", ["FILES"]);
    for (name, what) in [
        ("/etc/herald/herald.toml", "The configuration."),
        (
            "/var/lib/herald/herald.db",
            "The state: alerts, the outbox, silences and each mailbox's cursor (SQLite).",
        ),
    ] {
        roff.control("TP", [])
            .text([italic(name)])
            .text([roman(what)]);
    }
    roff.control("SH", ["EXIT STATUS"]);
    roff.text([roman(
        "0 on success; 1 on a runtime failure (a sink, the IMAP server, the state); \
         2 on bad usage or an unusable configuration.",
    )]);
    roff.to_writer(&mut out)?;
    man.render_version_section(&mut out)?;
    out.flush()?;
    Ok(out)
}

/// One subcommand (and, nested, its own): usage, what it does, its arguments.
fn commands(roff: &mut Roff, parent: &str, command: &clap::Command) {
    if command.is_hide_set() {
        return;
    }
    let name = format!("{parent} {}", command.get_name());
    let leaf = command.get_subcommands().next().is_none();
    if leaf {
        let usage = command.clone().bin_name(&name).render_usage().to_string();
        let usage = usage.strip_prefix("Usage: ").unwrap_or(&usage).to_owned();
        roff.control("SS", [usage.as_str()]);
    } else {
        roff.control("SS", [name.as_str()]);
    }
    if let Some(about) = command.get_long_about().or(command.get_about()) {
        roff.text([roman(about.to_string())]);
    }
    for arg in command.get_arguments() {
        if arg.is_hide_set() || arg.is_global_set() {
            continue;
        }
        let id = arg.get_id().as_str();
        if id == "help" || id == "version" {
            continue;
        }
        let flag = match (arg.get_short(), arg.get_long()) {
            (Some(short), Some(long)) => format!("-{short}, --{long}"),
            (None, Some(long)) => format!("--{long}"),
            (Some(short), None) => format!("-{short}"),
            (None, None) => id.to_uppercase(),
        };
        let mut line = vec![bold(flag)];
        if arg.get_action().takes_values() && arg.get_long().is_some() {
            let value = arg
                .get_value_names()
                .and_then(|names| names.first())
                .map_or_else(|| id.to_uppercase(), ToString::to_string);
            line.push(roman(" "));
            line.push(italic(value));
        }
        roff.control("TP", []).text(line);
        let mut help = arg
            .get_long_help()
            .or(arg.get_help())
            .map(ToString::to_string)
            .unwrap_or_default();
        let values: Vec<String> = arg
            .get_possible_values()
            .iter()
            .filter(|v| !v.is_hide_set())
            .map(|v| v.get_name().to_owned())
            .collect();
        if !help.is_empty() && !help.ends_with('.') {
            help.push('.');
        }
        if !values.is_empty() && arg.get_action().takes_values() {
            help.push_str(&format!(" One of: {}.", values.join(", ")));
        }
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        if !defaults.is_empty() {
            help.push_str(&format!(" [default: {}]", defaults.join(", ")));
        }
        roff.text([roman(help)]);
    }
    for sub in command.get_subcommands() {
        commands(roff, &name, sub);
    }
}
