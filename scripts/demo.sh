#!/usr/bin/env bash
# herald end to end, on this machine: a private Dovecot on loopback, herald watching it with
# the console sink, a sample cron failure delivered into the mailbox, the alert shown.
# Installs Dovecot (Debian's dovecot-imapd) if it is missing; everything else lives in a
# temporary directory that is removed at exit. Run as root (Dovecot's private instance
# switches to its own system users) from the repository root: scripts/demo.sh
set -euo pipefail

if ! command -v dovecot >/dev/null 2>&1; then
    echo "demo: installing dovecot-imapd (Debian) ..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dovecot-imapd >/dev/null
fi

echo "demo: building herald ..."
cargo build --quiet --release --bin herald
herald_bin="$(pwd)/target/release/herald"

dir="$(mktemp -d /tmp/herald-demo.XXXXXX)"
chmod 0755 "$dir"
mkdir -p "$dir/mail" "$dir/run" "$dir/state"
chown nobody:nogroup "$dir/mail"
# A free loopback port: a random one nothing answers on.
port=""
for _ in $(seq 50); do
    candidate=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null; then
        port=$candidate
        break
    fi
done
[ -n "$port" ] || { echo "demo: no free port found" >&2; exit 1; }

dovecot_pid=""
herald_pid=""
cleanup() {
    [ -n "$herald_pid" ] && kill "$herald_pid" 2>/dev/null && wait "$herald_pid" 2>/dev/null || true
    [ -n "$dovecot_pid" ] && kill "$dovecot_pid" 2>/dev/null && wait "$dovecot_pid" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

cat > "$dir/dovecot.conf" <<CONF
protocols = imap
listen = 127.0.0.1
base_dir = $dir/run
state_dir = $dir/state
log_path = $dir/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:$dir/mail/%u
default_internal_user = dovecot
default_internal_group = dovecot
default_login_user = dovenull
first_valid_uid = 1
passdb {
  driver = static
  args = password=secret
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=$dir/mail/%u
}
service imap-login {
  inet_listener imap {
    port = $port
  }
  inet_listener imaps {
    port = 0
  }
  chroot =
}
service anvil {
  chroot =
}
CONF
dovecot -F -c "$dir/dovecot.conf" &
dovecot_pid=$!
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done

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

cat > "$dir/cron.eml" <<'MAIL'
From: root@web01.example.net (Cron Daemon)
To: root@web01.example.net
Subject: Cron <root@web01> /usr/local/bin/backup.sh
MIME-Version: 1.0
Content-Type: text/plain; charset=UTF-8
X-Cron-Env: <SHELL=/bin/sh>
X-Cron-Env: <HOME=/root>
X-Cron-Env: <LOGNAME=root>
Message-Id: <demo-1@web01.example.net>
Date: Tue, 24 Nov 2026 03:00:01 +0000

backup.sh: error: cannot stat /srv/data: No such file or directory
MAIL
echo "demo: delivering a sample cron failure into the mailbox"
doveadm -c "$dir/dovecot.conf" save -u alerts -m INBOX < "$dir/cron.eml"

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
