#!/bin/bash
# What the official postgres image's entrypoint does, as far as Signup's
# compose file relies on it: on an empty data folder, a cluster whose
# superuser is $POSTGRES_USER with $POSTGRES_PASSWORD, the database
# $POSTGRES_DB, password logins over the network; then the server, as the
# postgres user.
set -euo pipefail
if [ "${1:-}" = postgres ] && [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  chown -R postgres: "$PGDATA" /var/run/postgresql
  chmod 700 "$PGDATA"
  if [ ! -s "$PGDATA/PG_VERSION" ]; then
    : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}"
    user="${POSTGRES_USER:-postgres}"
    pwfile="$(mktemp)"
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    chown postgres: "$pwfile"
    runuser -u postgres -- initdb -D "$PGDATA" -U "$user" --auth-local=trust --auth-host=scram-sha-256 \
      --pwfile="$pwfile" >/dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    if [ "${POSTGRES_DB:-$user}" != postgres ]; then
      echo "CREATE DATABASE \"${POSTGRES_DB:-$user}\" OWNER \"$user\";" |
        runuser -u postgres -- postgres --single -D "$PGDATA" postgres >/dev/null
    fi
  fi
  exec runuser -u postgres -- "$@" -c listen_addresses='*'
fi
exec "$@"
