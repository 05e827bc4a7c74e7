#!/usr/bin/env bash
# The container image, tested for real without pulling anything: builds the static musl
# binary, builds the image from it (Dockerfile, HERALD_FILES=prebuilt: FROM scratch), and runs
# it on a Docker daemon of this script's own (own data root, socket and exec root; no bridge,
# no iptables; --network host) against a private Dovecot and a loopback webhook. Checks: the
# image's USER is not root, /var/lib/herald is a volume the daemon writes its state to, the
# HEALTHCHECK (`herald health`) turns healthy, and one cron failure delivered into the mailbox
# arrives at the webhook. Everything is removed at exit.
# Run as root from anywhere: scripts/container-test.sh (installs docker.io, musl-tools and
# dovecot-imapd if missing). Takes a release build (minutes, the first time) plus ~30 s.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/dovecot.sh
source scripts/lib/dovecot.sh
started=$SECONDS
say() { echo "container-test: $*"; }
fail() { echo "container-test: FAILED: $*" >&2; exit 1; }

need_dovecot
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v musl-gcc >/dev/null 2>&1 || missing+=(musl-tools)
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]} ..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Debian's client, the daemon's own version (another docker on PATH may be newer).
docker_cli=/usr/bin/docker
[ -x "$docker_cli" ] || docker_cli=docker

say "building the static binary (release, x86_64-unknown-linux-musl) ..."
rustup target add x86_64-unknown-linux-musl >/dev/null 2>&1 || true
cargo build --quiet --release --locked --target x86_64-unknown-linux-musl --bin herald
target_dir="${CARGO_TARGET_DIR:-target}"
binary="$target_dir/x86_64-unknown-linux-musl/release/herald"

dir="$(mktemp -d /tmp/herald-container.XXXXXX)"
chmod 0755 "$dir"
dockerd_pid=""
dovecot_pid=""
webhook_pid=""
container=herald-container-test
cleanup() {
    if [ -n "$dockerd_pid" ]; then
        docker rm -f "$container" >/dev/null 2>&1 || true
        kill "$dockerd_pid" 2>/dev/null && wait "$dockerd_pid" 2>/dev/null || true
    fi
    [ -n "$webhook_pid" ] && kill "$webhook_pid" 2>/dev/null && wait "$webhook_pid" 2>/dev/null || true
    [ -n "$dovecot_pid" ] && kill "$dovecot_pid" 2>/dev/null && wait "$dovecot_pid" 2>/dev/null || true
    # The daemon unmounts what it mounted when it stops; anything left is unmounted here.
    grep -o " $dir/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
docker() { "$docker_cli" --host "unix://$dir/docker.sock" "$@"; }

say "starting a private Docker daemon in $dir ..."
# vfs: works on any filesystem (this may itself be an overlay); the image is a few MB.
dockerd --host "unix://$dir/docker.sock" --data-root "$dir/docker" --exec-root "$dir/exec" \
    --pidfile "$dir/docker.pid" --bridge=none --iptables=false --ip-masq=false \
    --storage-driver vfs > "$dir/dockerd.log" 2>&1 &
dockerd_pid=$!
for _ in $(seq 300); do
    docker version >/dev/null 2>&1 && break
    kill -0 "$dockerd_pid" 2>/dev/null || { cat "$dir/dockerd.log" >&2; fail "dockerd exited"; }
    sleep 0.1
done
docker version >/dev/null 2>&1 || { tail -20 "$dir/dockerd.log" >&2; fail "dockerd did not start in 30 s"; }

say "building the image from the binary (FROM scratch, nothing pulled) ..."
mkdir -p "$dir/context/state"
cp "$binary" "$dir/context/herald"
cp /etc/ssl/certs/ca-certificates.crt "$dir/context/ca-certificates.crt"
DOCKER_BUILDKIT=1 docker build --quiet --build-arg HERALD_FILES=prebuilt -t herald:test \
    -f Dockerfile "$dir/context" >/dev/null

user="$(docker image inspect -f '{{.Config.User}}' herald:test)"
case "$user" in
    "" | 0 | 0:* | root | root:*) fail "the image runs as root (USER '$user')" ;;
esac
volumes="$(docker image inspect -f '{{json .Config.Volumes}}' herald:test)"
[[ "$volumes" == *'"/var/lib/herald"'* ]] || fail "/var/lib/herald is not a volume: $volumes"
health="$(docker image inspect -f '{{json .Config.Healthcheck.Test}}' herald:test)"
[[ "$health" == *health* ]] || fail "no HEALTHCHECK running herald health: $health"
say "image: USER $user, VOLUME /var/lib/herald, HEALTHCHECK $health"

start_dovecot "$dir/dovecot"
webhook_port="$(free_port)"
metrics_port="$(free_port)"
# The loopback webhook: each POST's body, one per line, in webhook.jsonl.
python3 - "$webhook_port" "$dir/webhook.jsonl" > "$dir/webhook.log" 2>&1 <<'PY' &
import http.server, sys
port, out = int(sys.argv[1]), sys.argv[2]
class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with open(out, "ab") as f:
            f.write(body.replace(b"\n", b" ") + b"\n")
        self.send_response(200)
        self.end_headers()
http.server.HTTPServer(("127.0.0.1", port), Hook).serve_forever()
PY
webhook_pid=$!
wait_port "$webhook_port" || fail "the webhook did not start"

cat > "$dir/herald.toml" <<CONF
[imap]
host = "127.0.0.1"
port = $dovecot_port
tls = "none"
username = "alerts"
password = "\${IMAP_PASSWORD}"

[server]
listen = "127.0.0.1:$metrics_port"

[defaults]
sinks = ["hook"]
fallback = "hook"

[sinks.hook]
type = "webhook"
url = "http://127.0.0.1:$webhook_port/alert"
CONF
chmod 0644 "$dir/herald.toml"

say "running the container (--network host) ..."
docker volume create herald-test-state >/dev/null
docker run -d --name "$container" --network host \
    --health-interval 1s --health-start-period 30s \
    -e IMAP_PASSWORD=secret \
    -v herald-test-state:/var/lib/herald \
    -v "$dir/herald.toml:/etc/herald/herald.toml:ro" herald:test >/dev/null

status=""
for _ in $(seq 60); do
    status="$(docker inspect -f '{{.State.Health.Status}}' "$container")"
    [ "$status" = healthy ] && break
    [ "$(docker inspect -f '{{.State.Running}}' "$container")" = true ] \
        || { docker logs "$container" >&2; fail "the container exited"; }
    sleep 0.5
done
[ "$status" = healthy ] || { docker logs "$container" >&2; fail "not healthy after 30 s: $status"; }
say "HEALTHCHECK: healthy"

say "delivering a cron failure into the mailbox ..."
sample_cron_mail | doveadm -c "$dovecot_conf" save -u alerts -m INBOX
for _ in $(seq 100); do
    grep -q 'backup.sh' "$dir/webhook.jsonl" 2>/dev/null && break
    sleep 0.1
done
grep -q 'backup.sh' "$dir/webhook.jsonl" 2>/dev/null \
    || { docker logs "$container" >&2; fail "no alert at the webhook within 10 s"; }
say "webhook got: $(head -c 200 "$dir/webhook.jsonl")"

mountpoint="$(docker volume inspect -f '{{.Mountpoint}}' herald-test-state)"
owner="$(stat -c %u "$mountpoint/herald.db" 2>/dev/null)" \
    || fail "no herald.db in the volume: $(ls -la "$mountpoint")"
[ "$owner" != 0 ] || fail "herald.db in the volume belongs to root"
say "volume: herald.db written by uid $owner"

docker stop -t 20 "$container" >/dev/null
code="$(docker inspect -f '{{.State.ExitCode}}' "$container")"
[ "$code" = 0 ] || { docker logs "$container" >&2; fail "herald exited $code on docker stop"; }
say "docker stop: herald exited 0"
say "PASSED in $((SECONDS - started)) s"
