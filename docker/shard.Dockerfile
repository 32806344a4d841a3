# A PostgreSQL 15 shard for docker/compose.yaml, from Debian's packages on the same base image
# as pgshard's (no registry but Debian's). Environment: POSTGRES_USER, POSTGRES_PASSWORD,
# POSTGRES_DB (created on first start, with the *.sql files of /docker-entrypoint-initdb.d),
# PGPORT (the port it listens on, so several shards can share a host network).
#   docker build -f docker/shard.Dockerfile -t pgshard-shard .    (context: the repository root)
FROM debian:bookworm-slim
RUN mkdir -p /etc/postgresql-common/createcluster.d \
 && echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.d/pgshard.conf \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o postgres -g postgres -m 700 /var/lib/postgresql/data \
 && mkdir -p /docker-entrypoint-initdb.d
COPY docker/shard-entrypoint.sh /usr/local/bin/shard-entrypoint.sh
USER postgres
ENV PGDATA=/var/lib/postgresql/data PGPORT=5432 POSTGRES_USER=app POSTGRES_DB=app
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/shard-entrypoint.sh"]
