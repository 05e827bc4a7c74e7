//! Sample rules for the classification benchmark and tests: twenty rules of the kind a
//! sysadmin writes, and a complete configuration around them that loads without secrets.

/// Twenty rules of the kind a sysadmin writes, over the real kinds; they name the sinks
/// `pager`, `chat` and `archive`. Loaded by the classification benchmark (whose target is
/// 50,000 messages/s on one core with these rules) and by tests; see [`typical_config_toml`]
/// for a complete configuration around them.
pub fn typical_rules_toml() -> &'static str {
    r#"
[[rules]]
name = "archive-everything"
sinks = ["archive"]
continue = true

[[rules]]
name = "bounces"
match = { kind = "bounce" }
severity = "warning"
sinks = ["chat"]

[[rules]]
name = "logwatch-noise"
match = { kind = "logwatch", subject = "(?i)^logwatch for" }
drop = true

[[rules]]
name = "apticron-noise"
match = { kind = "apticron" }
drop = true

[[rules]]
name = "upgrades-ok"
match = { kind = "unattended-upgrades", failed = false }
drop = true

[[rules]]
name = "upgrades-failed"
match = { kind = "unattended-upgrades", failed = true }
severity = "warning"
sinks = ["chat"]
title = "unattended-upgrades failed on {{ host }}"

[[rules]]
name = "disk-health"
match = { kind = ["smartd", "zed"] }
severity = "critical"
sinks = ["pager", "chat"]

[[rules]]
name = "raid-degraded"
match = { kind = "mdadm", body = "(?i)degraded|fail" }
severity = "critical"
sinks = ["pager", "chat"]
dedup_key = "mdadm:{{ host }}"

[[rules]]
name = "raid-other"
match = { kind = "mdadm" }
sinks = ["chat"]

[[rules]]
name = "power"
match = { kind = "apcupsd" }
severity = "critical"
sinks = ["pager"]

[[rules]]
name = "sudo-root-shell"
match = { kind = "sudo", command = "*/bin/*sh" }
severity = "critical"
sinks = ["pager", "chat"]

[[rules]]
name = "sudo"
match = { kind = "sudo" }
severity = "warning"
sinks = ["chat"]

[[rules]]
name = "fail2ban-quiet"
match = { kind = "fail2ban", subject = "(?i)(started|stopped)" }
drop = true

[[rules]]
name = "fail2ban"
match = { kind = "fail2ban" }
sinks = ["chat"]

[[rules]]
name = "backup-failures"
match = { kind = "cron", failed = true, command = "*backup*" }
severity = "critical"
sinks = ["pager", "chat"]
title = "backup failed on {{ host }}: {{ command }}"

[[rules]]
name = "db-cron-failures"
match = { kind = "cron", failed = true, host = "db*.example.net" }
severity = "critical"
sinks = ["pager"]

[[rules]]
name = "cron-failures"
match = { kind = ["cron", "anacron"], failed = true }
severity = "warning"
sinks = ["chat"]

[[rules]]
name = "cron-chatter"
match = { kind = ["cron", "anacron"], failed = false }
drop = true

[[rules]]
name = "systemd-units"
match = { kind = "systemd", "header.X-Systemd-Unit" = "." }
sinks = ["chat"]

[[rules]]
name = "other-from-monitoring"
match = { kind = "other", from = "*@monitoring.example.net", subject = "(?i)\\b(problem|down|critical)\\b" }
severity = "critical"
sinks = ["pager"]
"#
}

/// A complete configuration around [`typical_rules_toml`]: loopback IMAP and console sinks,
/// so that it loads anywhere without secrets.
pub fn typical_config_toml() -> String {
    format!(
        "[imap]\nhost = \"127.0.0.1\"\ntls = \"none\"\nusername = \"alerts\"\npassword = \"x\"\n\n\
         [defaults]\nsinks = [\"chat\"]\n\n\
         [sinks.pager]\ntype = \"console\"\n[sinks.chat]\ntype = \"console\"\n\
         [sinks.archive]\ntype = \"console\"\n{}",
        typical_rules_toml()
    )
}
