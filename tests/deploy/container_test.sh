#!/usr/bin/env bash
# The container tier. Builds pgshard's image from docker/Dockerfile and the shards' image from
# docker/shard.Dockerfile with podman, then runs the same checks twice: the pgshard image alone
# in front of three shards on the host, and docker/compose.yaml started for real with
# podman-compose (three shard containers and pgshard on the compose file's bridge network,
# ports published on free host ports). The checks: the image's health check, /ready, login, keyed
# inserts and a keyed select, a multi-shard count and the rows' spread over the shards, the
# admin console, JSON log lines, and a clean stop on SIGTERM.
#
# The image takes the Release binary the other tiers test (PGSHARD_FROM=prebuilt; the same
# optimisation: LTO, and a profile when that build has one) unless PGSHARD_IMAGE_FROM=source
# builds it from the sources inside the image as a user's `docker build` does.
# No image registry is reachable here, so the Dockerfiles' base images are made locally:
# `debootstrap --variant=minbase bookworm` imported as debian:bookworm, and the same tree
# without documentation, manual pages and translations as debian:bookworm-slim. The
# debootstrap tarballs are cached in $PGSHARD_CACHE (default /var/cache/pgshard).
# podman runs as root with runc, cgroupfs and host networking (containers.conf below).
# PGSHARD_SKIP_CONTAINER=1 skips this tier (exit 77, which CTest reports as skipped).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
[ "${PGSHARD_SKIP_CONTAINER:-0}" = 1 ] && { echo "skipped (PGSHARD_SKIP_CONTAINER=1)"; exit 77; }
# (Service names resolve on compose networks through CNI's dnsname plugin, which Debian's
# podman recommends: deploy/install-deps.sh --tests installs it.)
for tool in podman runc debootstrap podman-compose; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool is not installed (deploy/install-deps.sh --tests)"; exit 1; }
done
CACHE=${PGSHARD_CACHE:-/var/cache/pgshard}
IMAGE=${PGSHARD_IMAGE:-localhost/pgshard:latest}
SHARD_IMAGE=localhost/pgshard-shard:latest
BINARY=${PGSHARD_BINARY:-$ROOT/build/release/pgshard}
DIR=$(mktemp -d /tmp/pgshard-container-XXXXXX); chmod 755 "$DIR"
NAME=pgshard-test-$$
PROJECT=pgshard-compose-$$
source "$ROOT/tests/harness/free_port.sh"
fail() { echo "FAIL: $*"; exit 1; }

# The base images' tarballs, cached in $CACHE: one debootstrap gives both, the tree as it is
# (debian:bookworm) and then trimmed (debian:bookworm-slim). Another run making them
# (./tests/run.sh starts `--base-only` at its beginning, beside the build) is waited for.
base_tarballs() {
  mkdir -p "$CACHE"
  exec 9>"$CACHE/base.lock"
  flock 9
  if [ ! -s "$CACHE/bookworm-minbase.tar" ] || [ ! -s "$CACHE/bookworm-slim.tar" ]; then
    local root=$DIR/rootfs start
    start=$(date +%s)
    echo "debootstrap --variant=minbase bookworm"
    debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian \
      >"$DIR/debootstrap.log" 2>&1 || { tail -20 "$DIR/debootstrap.log"; fail "debootstrap"; }
    rm -f "$root"/var/cache/apt/archives/*.deb
    tar --numeric-owner -cf "$CACHE/bookworm-minbase.tar.tmp" -C "$root" . &&
      mv "$CACHE/bookworm-minbase.tar.tmp" "$CACHE/bookworm-minbase.tar"
    rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
      "$root"/var/lib/apt/lists/*
    find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
    tar --numeric-owner -cf "$CACHE/bookworm-slim.tar.tmp" -C "$root" . &&
      mv "$CACHE/bookworm-slim.tar.tmp" "$CACHE/bookworm-slim.tar"
    rm -rf "$root"
    echo "base images' trees made in $(( $(date +%s) - start )) s"
  fi
  flock -u 9
}
if [ "${1:-}" = --base-only ]; then
  trap 'rm -rf "$DIR"' EXIT
  base_tarballs
  exit 0
fi
base_tarballs

cat >"$DIR/containers.conf" <<'CONF'
[containers]
default_ulimits = []
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
CONF
export CONTAINERS_CONF=$DIR/containers.conf

# The compose file on its bridge network (podman-compose 1.0 gives every container its
# project network, which a container on the host network refuses: see docker/compose.host.yaml).
compose() { (cd "$ROOT" && podman-compose -p "$PROJECT" -f docker/compose.yaml "$@"); }
cleanup() {
  local rc=$?
  if [ $rc -ne 0 ] && [ $rc -ne 77 ]; then
    echo "---- container log ----"; podman logs --tail 40 "$NAME" 2>&1 || true
    for c in shard0 shard1 shard2 pgshard; do
      echo "---- compose $c log ----"; podman logs --tail 20 "${PROJECT}_${c}_1" 2>&1 || true
    done
  fi
  podman rm -f -t 0 "$NAME" >/dev/null 2>&1 || true
  compose down -t 0 >/dev/null 2>&1 || true
  podman network rm -f "${PROJECT}_default" >/dev/null 2>&1 || true
  podman volume prune -f >/dev/null 2>&1 || true
  "$ROOT/tests/harness/pgcluster.sh" stop "$DIR/shards" >/dev/null 2>&1 || true
  rm -rf "$DIR" "$ROOT/build/image"
  exit $rc
}
trap cleanup EXIT

# ---- base images ----
base_image() {  # tag tarball-name
  podman image exists "$1" || podman import "$CACHE/$2" "$1" >/dev/null
}
base_image debian:bookworm bookworm-minbase.tar
base_image debian:bookworm-slim bookworm-slim.tar

# ---- the images ----
from=${PGSHARD_IMAGE_FROM:-prebuilt}
if [ "$from" = prebuilt ]; then
  [ -x "$BINARY" ] || fail "no Release binary at $BINARY (deploy/build.sh Release)"
  mkdir -p "$ROOT/build/image"
  strip -o "$ROOT/build/image/pgshard" "$BINARY"
fi
echo "podman build -f docker/Dockerfile --build-arg PGSHARD_FROM=$from"
start=$(date +%s)
podman build --format docker --network=host --pull=never --build-arg PGSHARD_FROM="$from" \
  -f "$ROOT/docker/Dockerfile" -t "$IMAGE" "$ROOT" \
  >"$DIR/build.log" 2>&1 || { tail -40 "$DIR/build.log"; fail "podman build"; }
echo "pgshard image built in $(( $(date +%s) - start )) s: $(podman image inspect -f '{{.Size}}' "$IMAGE") bytes"
[ "$(podman image inspect -f '{{.Config.User}}' "$IMAGE")" = pgshard ] || fail "the image does not run as pgshard"
podman run --rm --network=host --pull=never --health-interval=disable --entrypoint /usr/local/bin/pgshard "$IMAGE" --version \
  | grep -q pgshard || fail "pgshard --version in the image"
start=$(date +%s)
podman build --format docker --network=host --pull=never -f "$ROOT/docker/shard.Dockerfile" \
  -t "$SHARD_IMAGE" "$ROOT" >"$DIR/shard-build.log" 2>&1 || { tail -40 "$DIR/shard-build.log"; fail "podman build (shard)"; }
echo "shard image built in $(( $(date +%s) - start )) s: $(podman image inspect -f '{{.Size}}' "$SHARD_IMAGE") bytes"

# ---- the checks, for one pgshard in front of three shards ----
check_cluster() {  # where container port http s0 s1 s2
  local where=$1 container=$2 port=$3 http=$4 s0=$5 s1=$6 s2=$7
  local url="postgres://app:secret@127.0.0.1:$port/app"
  for _ in $(seq 300); do psql -X -qAt "$url" -c 'select 1' >/dev/null 2>&1 && break; sleep 0.2; done
  psql -X -qAt "$url" -c 'select 1' >/dev/null || fail "$where: login"
  # The Dockerfile's HEALTHCHECK, run by podman inside the container.
  podman healthcheck run "$container" >/dev/null || fail "$where: the image's health check failed"
  curl -sf "http://127.0.0.1:$http/ready" >/dev/null || fail "$where: /ready"
  for i in 1 2 3 4 5 6 7 8 9 10; do
    psql -X -qAt "$url" -c "insert into users (id, name) values ($((1000 + i)), 'k$i')" >/dev/null ||
      fail "$where: keyed insert $i"
  done
  [ "$(psql -X -qAt "$url" -c 'select name from users where id = 1007')" = k7 ] || fail "$where: keyed select"
  local total
  total=$(psql -X -qAt "$url" -c 'select count(*) from users where id > 1000')
  [ "$total" = 10 ] || fail "$where: multi-shard count: $total"
  # Each row is on one shard only, and not all on one.
  local sum=0 used=0 n p per_shard=""
  for p in "$s0" "$s1" "$s2"; do
    n=$(PGPASSWORD=secret psql -X -qAt -h 127.0.0.1 -p "$p" -U app app -c 'select count(*) from users where id > 1000')
    per_shard+="$n "; sum=$((sum + n)); [ "$n" -gt 0 ] && used=$((used + 1))
  done
  [ "$sum" = 10 ] && [ "$used" -ge 2 ] || fail "$where: rows per shard: $per_shard"
  PGPASSWORD=admin psql -X -qAt -h 127.0.0.1 -p "$port" -U admin pgshard -c 'SHOW SHARDS' |
    grep -q '^s2|' || fail "$where: admin console"
  podman logs "$container" 2>&1 | grep '^{' | /usr/bin/python3 -c '
import json, sys
lines = sys.stdin.read().splitlines()
assert lines, "no log lines"
for line in lines:
    json.loads(line)
' || fail "$where: log_format: json: a log line is not JSON"
}
# SIGTERM ends pgshard within timeouts.shutdown, exit status 0.
check_stop() {  # where container seconds stop-command...
  local where=$1 container=$2 limit=$3 start code; shift 3
  start=$(date +%s)
  "$@" >/dev/null 2>&1
  code=$(podman inspect -f '{{.State.ExitCode}}' "$container")
  [ "$code" = 0 ] || fail "$where: exit status $code after SIGTERM"
  [ $(( $(date +%s) - start )) -le "$limit" ] || fail "$where: stopping took $(( $(date +%s) - start )) s"
}

# ---- 1. the image alone, three shards on the host ----
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
check_cluster "image" "$NAME" "$PORT" "$HTTP" "$S0" "$S1" "$S2"
check_stop "image" "$NAME" 10 podman stop -t 20 "$NAME"
"$ROOT/tests/harness/pgcluster.sh" stop "$DIR/shards" >/dev/null

# ---- 2. docker/compose.yaml for real: three shard containers and pgshard ----
export S0_PORT=$(free_port) S1_PORT=$(free_port) S2_PORT=$(free_port) PGSHARD_PORT=$(free_port) ADMIN_HTTP_PORT=$(free_port)
start=$(date +%s)
compose up -d >"$DIR/compose.log" 2>&1 || { tail -40 "$DIR/compose.log"; fail "podman-compose up"; }
check_cluster "compose" "${PROJECT}_pgshard_1" "$PGSHARD_PORT" "$ADMIN_HTTP_PORT" "$S0_PORT" "$S1_PORT" "$S2_PORT"
echo "compose: cluster up and checked in $(( $(date +%s) - start )) s"
# The quickstart schema is on every shard (orders too), from the shards' first start.
for p in "$S0_PORT" "$S1_PORT" "$S2_PORT"; do
  PGPASSWORD=secret psql -X -qAt -h 127.0.0.1 -p "$p" -U app app -c 'select count(*) from orders' >/dev/null ||
    fail "compose: shard $p lacks the schema"
done
check_stop "compose" "${PROJECT}_pgshard_1" 35 podman stop -t 35 "${PROJECT}_pgshard_1"
compose down -t 10 >>"$DIR/compose.log" 2>&1 || fail "podman-compose down"
echo "container tier: images built, image alone and compose cluster: health check, keyed and multi-shard statements, console, stop: ok"
