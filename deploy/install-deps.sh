#!/usr/bin/env bash
# Installs the Debian 12 packages pgshard builds and tests with, when any is missing.
set -euo pipefail
PACKAGES=(build-essential cmake libboost1.81-dev libssl-dev libspdlog-dev libyaml-cpp-dev
  libpg-query-dev libprotobuf-c-dev libpq-dev catch2 postgresql-15 postgresql-client-15
  pgbouncer openssl procps libbenchmark-dev clang libclang-rt-14-dev iproute2
  python3-psycopg2 python3-psycopg python3-asyncpg python3-sqlalchemy libpostgresql-jdbc-java)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  # Debian's postgresql package starts its own cluster; pgshard's scripts never use it.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
