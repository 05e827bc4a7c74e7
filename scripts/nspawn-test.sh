#!/usr/bin/env bash
# Boots dist/herald.service for real: a Debian root made with debootstrap, booted with
# systemd-nspawn, herald and a private Dovecot inside. Checks that the unit starts (READY=1
# within the start timeout), shows the IMAP state in its status, delivers one alert read
# from the credential-provided password, survives `systemctl reload`, keeps feeding a 5 s
# watchdog, and runs sandboxed as a non-root user. Not part of scripts/test.sh (it takes a
# few minutes and needs a Debian mirror); run it as root from anywhere:
#   scripts/nspawn-test.sh                        # builds herald (release) first
#   HERALD_BIN=target/debug/herald scripts/nspawn-test.sh   # or tests a given binary
# Exit 0 when every check passed; the container's journal is printed on failure.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v systemd-nspawn >/dev/null 2>&1 || need+=(systemd-container)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

bin="${HERALD_BIN:-}"
if [ -z "$bin" ]; then
    cargo build --release --quiet
    bin="${CARGO_TARGET_DIR:-target}/release/herald"
fi

work="$(mktemp -d /var/tmp/herald-nspawn.XXXXXX)"
trap 'rm -rf "$work"' EXIT
root="$work/root"
cache="${HERALD_NSPAWN_CACHE:-/var/tmp/herald-nspawn-root.tar}"
if [ -f "$cache" ]; then
    mkdir -p "$root" && tar -xf "$cache" -C "$root"
else
    echo "nspawn-test: debootstrap (about 2 minutes) ..."
    # procps: the unit's ExecReload is /bin/kill (as on any standard Debian install).
    debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,dovecot-imapd,procps \
        bookworm "$root" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >/dev/null
    tar -cf "$cache" -C "$root" .
fi

install -m 0755 "$bin" "$root/usr/bin/herald"
install -m 0644 dist/herald.service "$root/etc/systemd/system/herald.service"
# A 5 s watchdog, so that a few periods pass during the test.
mkdir -p "$root/etc/systemd/system/herald.service.d"
printf '[Service]\nWatchdogSec=5s\n' >"$root/etc/systemd/system/herald.service.d/test.conf"

# Dovecot: one user, mail in /var/mail/herald, plaintext on loopback port 10143.
cat >"$root/etc/dovecot/local.conf" <<'EOF'
protocols = imap
listen = 127.0.0.1
service imap-login {
  inet_listener imap {
    port = 10143
  }
  inet_listener imaps {
    port = 0
  }
}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
passdb {
  driver = passwd-file
  args = scheme=PLAIN /etc/dovecot/herald.passwd
}
userdb {
  driver = static
  args = uid=vmail gid=vmail home=/var/mail/%u
}
mail_location = maildir:~/Maildir
EOF
echo 'herald:{PLAIN}nspawn-secret' >"$root/etc/dovecot/herald.passwd"

mkdir -p "$root/etc/herald/credentials"
printf 'nspawn-secret\n' >"$root/etc/herald/credentials/imap_password"
chmod 0600 "$root/etc/herald/credentials/imap_password"
cat >"$root/etc/herald/herald.toml" <<'EOF'
[imap]
host = "127.0.0.1"
port = 10143
tls = "none"
username = "herald"
password_file = "${CREDENTIALS_DIRECTORY}/imap_password"

[sinks.console]
type = "console"

[defaults]
sinks = ["console"]
EOF

# The checks run inside, as a oneshot after herald; results go to /results, then poweroff.
mkdir -p "$work/results"
cat >"$root/usr/local/bin/herald-nspawn-check" <<'EOF'
#!/bin/bash
set -u
out=/results/report
fail() { echo "FAIL: $*" >>"$out"; }
pass() { echo "ok: $*" >>"$out"; }
: >"$out"
id vmail >/dev/null 2>&1 || useradd --system --no-create-home vmail
mkdir -p /var/mail/herald && chown -R vmail:vmail /var/mail
systemctl restart dovecot
systemctl start herald && pass "herald started (READY=1)" || fail "herald did not start"
for _ in $(seq 50); do
    systemctl show -p StatusText --value herald | grep -q '1 of 1 mailboxes up' && break
    sleep 0.2
done
status="$(systemctl show -p StatusText --value herald)"
[[ "$status" == *"1 of 1 mailboxes up"* ]] && pass "STATUS: $status" || fail "STATUS: $status"
user="$(ps -o user= -C herald | head -1)"
[ -n "$user" ] && [ "$user" != root ] && pass "runs as $user" || fail "runs as '$user'"
printf 'From: cron@example.org\r\nTo: herald@localhost\r\nSubject: nspawn alert\r\n\r\nx\r\n' \
    | /usr/lib/dovecot/dovecot-lda -d herald
for _ in $(seq 100); do
    journalctl -u herald -o cat | grep -q 'nspawn alert' && break
    sleep 0.2
done
journalctl -u herald -o cat | grep -q 'Alert delivered' && pass "alert delivered" || fail "no alert"
systemctl reload herald
for _ in $(seq 100); do
    journalctl -u herald -o cat | grep -q 'Configuration reloaded' && break
    sleep 0.2
done
journalctl -u herald -o cat | grep -q 'Configuration reloaded' && pass "reloaded" || fail "no reload"
sleep 12   # more than two 5 s watchdog periods
[ "$(systemctl show -p NRestarts --value herald)" = 0 ] \
    && systemctl is-active -q herald && pass "alive after 12 s of a 5 s watchdog, no restart" \
    || fail "restarted or dead: $(systemctl show -p NRestarts,ActiveState herald)"
journalctl -u herald -o cat >/results/journal
systemctl poweroff
EOF
chmod 0755 "$root/usr/local/bin/herald-nspawn-check"
cat >"$root/etc/systemd/system/herald-nspawn-check.service" <<'EOF'
[Unit]
Description=herald nspawn checks
After=multi-user.target dovecot.service
[Service]
Type=oneshot
ExecStart=/usr/local/bin/herald-nspawn-check
[Install]
WantedBy=multi-user.target
EOF
ln -sf /etc/systemd/system/herald-nspawn-check.service \
    "$root/etc/systemd/system/multi-user.target.wants/herald-nspawn-check.service"

echo "nspawn-test: booting ..."
timeout 300 systemd-nspawn --quiet --register=no --keep-unit -D "$root" \
    --bind="$work/results:/results" --boot >"$work/console" 2>&1 || true
if [ ! -s "$work/results/report" ]; then
    echo "nspawn-test: no report; the console said:" >&2
    tail -50 "$work/console" >&2
    exit 1
fi
cat "$work/results/report"
if grep -q '^FAIL' "$work/results/report"; then
    echo "--- herald's journal" >&2
    cat "$work/results/journal" >&2 || true
    exit 1
fi
echo "nspawn-test: all checks passed"
