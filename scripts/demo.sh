#!/usr/bin/env bash
# herald end to end, on this machine: a private Dovecot on loopback, herald watching it with
# the console sink, a sample cron failure delivered into the mailbox, the alert shown.
# Installs Dovecot (Debian's dovecot-imapd) if it is missing; everything else lives in a
# temporary directory that is removed at exit. Run as root (Dovecot's private instance
# switches to its own system users) from the repository root: scripts/demo.sh
set -euo pipefail

# shellcheck source=scripts/lib/dovecot.sh
source "$(dirname "$0")/lib/dovecot.sh"
need_dovecot

echo "demo: building herald ..."
cargo build --quiet --release --bin herald
herald_bin="$(pwd)/target/release/herald"

dir="$(mktemp -d /tmp/herald-demo.XXXXXX)"
chmod 0755 "$dir"
dovecot_pid=""
herald_pid=""
cleanup() {
    [ -n "$herald_pid" ] && kill "$herald_pid" 2>/dev/null && wait "$herald_pid" 2>/dev/null || true
    [ -n "$dovecot_pid" ] && kill "$dovecot_pid" 2>/dev/null && wait "$dovecot_pid" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

start_dovecot "$dir/dovecot"
port=$dovecot_port

cat > "$dir/herald.toml" <<CONF
[imap]
host = "127.0.0.1"
port = $port
tls = "none"
username = "alerts"
password = "secret"

[state]
path = "$dir/herald.db"

[defaults]
sinks = ["console"]

[sinks.console]
type = "console"

[[rules]]
name = "cron-failures"
match = { kind = "cron" }
severity = "critical"
sinks = ["console"]
CONF

echo "demo: herald watching alerts@127.0.0.1:$port"
"$herald_bin" run -c "$dir/herald.toml" > "$dir/alerts.txt" 2> "$dir/herald.log" &
herald_pid=$!
for _ in $(seq 100); do
    grep -q "First start on this mailbox" "$dir/herald.log" && break
    sleep 0.1
done

sample_cron_mail > "$dir/cron.eml"
echo "demo: delivering a sample cron failure into the mailbox"
doveadm -c "$dovecot_conf" save -u alerts -m INBOX < "$dir/cron.eml"

for _ in $(seq 100); do
    [ -s "$dir/alerts.txt" ] && break
    sleep 0.1
done
if [ ! -s "$dir/alerts.txt" ]; then
    echo "demo: no alert within 10 s" >&2
    exit 1
fi
echo "demo: herald's log (stderr):"
sed 's/^/    /' "$dir/herald.log"
echo "demo: the alert, as the console sink printed it (stdout):"
sed 's/^/    /' "$dir/alerts.txt"
echo "demo: the same message as \`herald classify --json\` reports it:"
"$herald_bin" classify --json -c "$dir/herald.toml" "$dir/cron.eml"
