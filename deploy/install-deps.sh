#!/usr/bin/env bash
# Installs the Debian 12 packages pgshard needs, when any is missing.
#   deploy/install-deps.sh          building and running pgshard (what the quickstart needs)
#   deploy/install-deps.sh --tests  also what ./tests/run.sh uses: test frameworks, real
#                                   drivers, PgBouncer for the benchmarks, containers, clang,
#                                   Patroni and etcd for the [patroni] failover tier
set -euo pipefail
PACKAGES=(build-essential cmake libboost1.81-dev libssl-dev libspdlog-dev libyaml-cpp-dev
  libpg-query-dev libprotobuf-c-dev libpq-dev postgresql-15 postgresql-client-15 procps)
if [ "${1:-}" = --tests ]; then
  PACKAGES+=(catch2 pgbouncer openssl libbenchmark-dev clang libclang-rt-14-dev iproute2 gdb
    python3-psycopg2 python3-psycopg python3-asyncpg python3-sqlalchemy python3-alembic
    libpostgresql-jdbc-java curl chromium python3-kubernetes
    python3-yaml systemd podman runc debootstrap podman-compose
    golang-github-containernetworking-plugin-dnsname
    patroni etcd-server python3-etcd)
  # (python3-etcd: Patroni's etcd client. patroni depends on one of several DCS clients, and
  # python3-kubernetes, installed above, satisfies that without it.)
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  # Debian's postgresql package starts its own cluster; pgshard's scripts never use it.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# PostgreSQL's regression tier builds regress.so with PGXS: the server headers must be those
# of the installed server (installing the newest would upgrade the server under the tests).
if [ "${1:-}" = --tests ] &&
   ! dpkg-query -W -f='${Status}' postgresql-server-dev-15 2>/dev/null | grep -q "install ok installed"; then
  pgver=$(dpkg-query -W -f='${Version}' postgresql-client-15)
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "postgresql-server-dev-15=$pgver" >/dev/null
fi
