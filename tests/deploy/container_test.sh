#!/usr/bin/env bash
# Builds the container image from docker/Dockerfile, unchanged, with podman and runs it
# against three test shards: the container's health check, login, a keyed insert and
# select, a multi-shard aggregate, the admin console, and a graceful stop on SIGTERM.
#
# No image registry is reachable here, so the Dockerfile's base images are made locally:
# `debootstrap --variant=minbase bookworm` imported as debian:bookworm, and the same tree
# without documentation, manual pages and translations as debian:bookworm-slim. The
# debootstrap tarballs are cached in $PGSHARD_CACHE (default /var/cache/pgshard).
# podman runs as root with runc, cgroupfs and host networking (containers.conf below).
# PGSHARD_SKIP_CONTAINER=1 skips this tier (exit 77, which CTest reports as skipped).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
[ "${PGSHARD_SKIP_CONTAINER:-0}" = 1 ] && { echo "skipped (PGSHARD_SKIP_CONTAINER=1)"; exit 77; }
for tool in podman runc debootstrap; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool is not installed (deploy/install-deps.sh)"; exit 1; }
done
CACHE=${PGSHARD_CACHE:-/var/cache/pgshard}
IMAGE=${PGSHARD_IMAGE:-localhost/pgshard:test}
DIR=$(mktemp -d /tmp/pgshard-container-XXXXXX); chmod 755 "$DIR"
NAME=pgshard-test-$$
source "$ROOT/tests/harness/free_port.sh"
fail() { echo "FAIL: $*"; exit 1; }

cat >"$DIR/containers.conf" <<'CONF'
[containers]
default_ulimits = []
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
CONF
export CONTAINERS_CONF=$DIR/containers.conf

cleanup() {
  local rc=$?
  if [ $rc -ne 0 ] && [ $rc -ne 77 ]; then
    echo "---- container log ----"; podman logs --tail 40 "$NAME" 2>&1 || true
  fi
  podman rm -f -t 0 "$NAME" >/dev/null 2>&1 || true
  "$ROOT/tests/harness/pgcluster.sh" stop "$DIR/shards" >/dev/null 2>&1 || true
  rm -rf "$DIR"
  exit $rc
}
trap cleanup EXIT

# ---- base images ----
base_image() {  # tag tarball-name trim
  local tag=$1 tarball=$CACHE/$2
  podman image exists "$tag" && return 0
  if [ ! -s "$tarball" ]; then
    mkdir -p "$CACHE"
    local root=$DIR/rootfs-$2
    echo "debootstrap --variant=minbase bookworm (for $tag)"
    debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian \
      >"$DIR/debootstrap.log" 2>&1 || { tail -20 "$DIR/debootstrap.log"; fail "debootstrap"; }
    rm -f "$root"/var/cache/apt/archives/*.deb
    if [ "$3" = slim ]; then
      rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
        "$root"/var/lib/apt/lists/*
      find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
    fi
    tar --numeric-owner -cf "$tarball.tmp" -C "$root" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$root"
  fi
  podman import "$tarball" "$tag" >/dev/null
}
base_image debian:bookworm bookworm-minbase.tar full
base_image debian:bookworm-slim bookworm-slim.tar slim

# ---- the image, from docker/Dockerfile as it is ----
echo "podman build -f docker/Dockerfile"
start=$(date +%s)
podman build --format docker --network=host --pull=never -f "$ROOT/docker/Dockerfile" -t "$IMAGE" "$ROOT" \
  >"$DIR/build.log" 2>&1 || { tail -40 "$DIR/build.log"; fail "podman build"; }
echo "image built in $(( $(date +%s) - start )) s: $(podman image inspect -f '{{.Size}}' "$IMAGE") bytes"
[ "$(podman image inspect -f '{{.Config.User}}' "$IMAGE")" = pgshard ] || fail "the image does not run as pgshard"
podman run --rm --network=host --pull=never --health-interval=disable --entrypoint /usr/local/bin/pgshard "$IMAGE" --version \
  | grep -q pgshard || fail "pgshard --version in the image"

# ---- three shards on the host, the container in front of them ----
S0=$(free_port); S1=$(free_port); S2=$(free_port); PORT=$(free_port); HTTP=$(free_port)
"$ROOT/tests/harness/pgcluster.sh" start "$DIR/shards" "$S0" "$S1" "$S2" >/dev/null
for p in "$S0" "$S1" "$S2"; do
  PGPASSWORD=secret psql -X -q -h 127.0.0.1 -p "$p" -U app app \
    -c 'create table users (id bigint primary key, name text)' >/dev/null
done
cat >"$DIR/pgshard.yaml" <<YAML
listen: { host: 127.0.0.1, port: $PORT }
users:
  - { name: app, password: secret, pool_mode: transaction }
  - { name: admin, password: admin }
shards:
  - { name: s0, primary: "postgres://app:secret@127.0.0.1:$S0/app", pool_size: 4 }
  - { name: s1, primary: "postgres://app:secret@127.0.0.1:$S1/app", pool_size: 4 }
  - { name: s2, primary: "postgres://app:secret@127.0.0.1:$S2/app", pool_size: 4 }
sharded_tables:
  - { table: users, column: id, type: bigint, function: hash }
unsharded: reject
two_phase_log: /var/lib/pgshard/2pc
admin: { users: [admin], http: "127.0.0.1:$HTTP" }
log_format: json
timeouts: { shutdown: 5 }
YAML
chmod 644 "$DIR/pgshard.yaml"
podman run -d --name "$NAME" --network=host --pull=never --health-interval=disable -e PGSHARD_HEALTH_PORT="$HTTP" \
  -v "$DIR/pgshard.yaml:/etc/pgshard/pgshard.yaml:ro" "$IMAGE" >/dev/null 2>>"$DIR/podman.log"
URL="postgres://app:secret@127.0.0.1:$PORT/app"
for _ in $(seq 100); do psql -X -qAt "$URL" -c 'select 1' >/dev/null 2>&1 && break; sleep 0.2; done

# The Dockerfile's HEALTHCHECK, run by podman inside the container.
podman healthcheck run "$NAME" >/dev/null || fail "the image's health check failed"
curl -sf "http://127.0.0.1:$HTTP/ready" >/dev/null || fail "/ready"

for i in 1 2 3 4 5 6 7 8 9 10; do
  psql -X -qAt "$URL" -c "insert into users (id, name) values ($((1000 + i)), 'k$i')" >/dev/null ||
    fail "keyed insert $i"
done
[ "$(psql -X -qAt "$URL" -c 'select name from users where id = 1007')" = k7 ] || fail "keyed select"
total=$(psql -X -qAt "$URL" -c 'select count(*) from users where id > 1000')
[ "$total" = 10 ] || fail "multi-shard count: $total"
# Each row is on one shard only, and not all on one.
per_shard=""
for p in "$S0" "$S1" "$S2"; do
  per_shard+="$(PGPASSWORD=secret psql -X -qAt -h 127.0.0.1 -p "$p" -U app app -c 'select count(*) from users where id > 1000') "
done
sum=0; used=0
for n in $per_shard; do sum=$((sum + n)); [ "$n" -gt 0 ] && used=$((used + 1)); done
[ "$sum" = 10 ] && [ "$used" -ge 2 ] || fail "rows per shard: $per_shard"
PGPASSWORD=admin psql -X -qAt -h 127.0.0.1 -p "$PORT" -U admin pgshard -c 'SHOW SHARDS' |
  grep -q '^s2|' || fail "admin console"
podman logs "$NAME" 2>&1 | /usr/bin/python3 -c '
import json, sys
lines = sys.stdin.read().splitlines()
assert lines, "no log lines"
for line in lines:
    json.loads(line)
' || fail "log_format: json: a log line is not JSON"

# SIGTERM (podman stop) ends pgshard within timeouts.shutdown, exit status 0.
start=$(date +%s)
podman stop -t 20 "$NAME" >/dev/null
code=$(podman inspect -f '{{.State.ExitCode}}' "$NAME")
[ "$code" = 0 ] || fail "exit status $code after SIGTERM"
[ $(( $(date +%s) - start )) -le 10 ] || fail "stopping took $(( $(date +%s) - start )) s"

# docker/compose.yaml through podman-compose: planned, not started. Its shards use the
# postgres:15 image, which needs a registry, and its bridge network's service names; with
# host networking the three shards would all take port 5432. The plan shows the file parses
# and builds pgshard from docker/Dockerfile with the repository as the context.
if command -v podman-compose >/dev/null; then
  plan=$(cd "$ROOT" && podman-compose --dry-run -f docker/compose.yaml up -d 2>&1) || true
  for service in shard0 shard1 shard2 pgshard; do
    echo "$plan" | grep -q -- "--name=docker_${service}_1" || { echo "$plan"; fail "compose: no $service"; }
  done
  echo "$plan" | grep -q -- "-f ../docker/Dockerfile \.\.$" || { echo "$plan"; fail "compose: build"; }
fi
echo "container tier: image built, health check, keyed and multi-shard statements, console, stop: ok"
