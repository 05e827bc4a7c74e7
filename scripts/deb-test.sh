#!/usr/bin/env bash
# The Debian package, checked: builds it (scripts/deb.sh: a release build), checks its file
# list and metadata, runs lintian (installed if missing), and installs it into a throwaway
# root with dpkg (--root), maintainer scripts and all: a minimal Debian made by debootstrap
# (about two minutes; HERALD_DEB_ROOT=DIR reuses one made earlier). In that root: the user,
# the state directory, the conffile's mode, `herald check` on the shipped configuration, the
# man page, an upgrade over itself keeping an edited conffile, and purge.
# Run as root from anywhere: scripts/deb-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
say() { echo "deb-test: $*"; }
fail() { echo "deb-test: FAILED: $*" >&2; exit 1; }

missing=()
command -v lintian >/dev/null 2>&1 || missing+=(lintian)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v musl-gcc >/dev/null 2>&1 || missing+=(musl-tools)
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]} ..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

work="$(mktemp -d /tmp/herald-deb-test.XXXXXX)"
trap 'rm -rf "$work"' EXIT
deb="$(scripts/deb.sh "$work")"
say "built $deb ($(du -k "$deb" | cut -f1) KB)"

dpkg-deb -c "$deb" | awk '{ print $6 }' | sed 's|^\./|/|' > "$work/files"
for path in /usr/bin/herald /lib/systemd/system/herald.service /etc/herald/herald.toml \
    /usr/share/man/man1/herald.1.gz /usr/share/bash-completion/completions/herald \
    /usr/share/zsh/vendor-completions/_herald /usr/share/fish/vendor_completions.d/herald.fish \
    /usr/share/doc/herald/copyright /usr/share/doc/herald/changelog.gz \
    /usr/share/doc/herald/config.example.toml; do
    grep -qx "$path" "$work/files" || fail "$path is not in the package"
done
if [ -f dist/dovecot/herald-push.lua ]; then
    grep -qx /usr/share/herald/dovecot-push.lua "$work/files" || fail "the Dovecot push script is missing"
    grep -qx /usr/share/doc/herald/examples/90-herald-push.conf "$work/files" \
        || fail "the Dovecot push configuration example is missing"
fi
dpkg-deb -c "$deb" | awk '$2 != "root/root" { bad = 1; print } END { exit bad }' \
    || fail "files not owned by root"
[ "$(dpkg-deb -f "$deb" Package)" = herald ] || fail "wrong Package"
dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles | grep -qx /etc/herald/herald.toml \
    || fail "/etc/herald/herald.toml is not a conffile"
say "file list, ownership and conffile: OK"

# lintian: errors fail; warnings are shown. It takes the static-pie binary for a shared
# library (shared-library-lacks-prerequisites), which it is not.
lintian --tag-display-limit 0 --suppress-tags shared-library-lacks-prerequisites \
    "$deb" 2>/dev/null | tee "$work/lintian" || true
if grep -q '^E:' "$work/lintian"; then fail "lintian reports errors"; fi
say "lintian: no errors"

root="${HERALD_DEB_ROOT:-}"
if [ -z "$root" ]; then
    root="$work/root"
    say "making a throwaway Debian root with debootstrap (minbase + adduser, procps) ..."
    debootstrap --variant=minbase --include=adduser,procps bookworm "$root" >"$work/debootstrap.log" 2>&1 \
        || { tail -20 "$work/debootstrap.log" >&2; fail "debootstrap failed"; }
fi
in_root() { chroot "$root" "$@"; }

say "installing into $root ..."
dpkg --root="$root" -i "$deb" >/dev/null
in_root getent passwd herald >/dev/null || fail "no herald user"
[ "$(in_root stat -c '%U:%G %a' /var/lib/herald)" = "herald:herald 750" ] \
    || fail "/var/lib/herald: $(in_root stat -c '%U:%G %a' /var/lib/herald)"
[ "$(in_root stat -c '%U:%G %a' /etc/herald/herald.toml)" = "root:herald 640" ] \
    || fail "herald.toml: $(in_root stat -c '%U:%G %a' /etc/herald/herald.toml)"
in_root /usr/bin/herald version | grep -q "^herald " || fail "herald version"
# The shipped configuration is valid as it is, for the daemon's user.
in_root setpriv --reuid=herald --regid=herald --init-groups \
    /usr/bin/herald check -c /etc/herald/herald.toml >/dev/null \
    || fail "herald check rejects the shipped configuration"
zcat "$root/usr/share/man/man1/herald.1.gz" | grep -q '^\.SH CONFIGURATION' || fail "man page"
say "installed: user herald, /var/lib/herald 750, herald.toml 640 root:herald, check OK"

# An upgrade (the same version again) keeps an edited conffile and the state.
echo "# edited" >> "$root/etc/herald/herald.toml"
touch "$root/var/lib/herald/herald.db"
dpkg --root="$root" --force-confold -i "$deb" >/dev/null
grep -q '^# edited' "$root/etc/herald/herald.toml" || fail "the upgrade replaced the edited conffile"
[ -e "$root/var/lib/herald/herald.db" ] || fail "the upgrade lost the state"
say "reinstall: edited conffile and state kept"

dpkg --root="$root" --purge herald >/dev/null
[ ! -e "$root/usr/bin/herald" ] || fail "purge left the binary"
[ ! -e "$root/var/lib/herald" ] || fail "purge left the state"
[ ! -e "$root/etc/herald/herald.toml" ] || fail "purge left the conffile"
say "purge: binary, conffile and state gone"
say "PASSED in $((SECONDS - started)) s"
