# The PostgreSQL 15 cluster of the team stack (`BACKEND=postgres deployments/start_servers.sh`).
# Sourced by start_servers.sh and stop_servers.sh after they set STATE; defines functions only.
#
# The cluster lives in $STATE/postgres (data/, postgres.log), listens on 127.0.0.1:$POSTGRES_PORT
# only (no Unix socket) and asks a password (scram-sha-256) of every connection. One role,
# $POSTGRES_USER, owns one database each for Prefect, MLflow's tracking store and MLflow's auth store.
#
#   POSTGRES_PORT (5433: 5432 is the port of Debian's own cluster), POSTGRES_USER (onnxforge),
#   POSTGRES_PASSWORD (else generated once into $STATE/postgres_password, mode 0600),
#   PG_BIN (/usr/lib/postgresql/15/bin)
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
POSTGRES_PORT=${POSTGRES_PORT:-5433}
POSTGRES_USER=${POSTGRES_USER:-onnxforge}
PG_DIR="$STATE/postgres"
PG_DATA="$PG_DIR/data"
PG_DATABASES=(prefect mlflow mlflow_auth)

# PostgreSQL refuses to run as root: as root, its programs run as the postgres system user (which
# then owns $PG_DIR); any other user runs them directly.
pg_owner_run() {
  if ((EUID == 0)); then
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

pg_running() {
  [[ -f "$PG_DATA/postmaster.pid" ]] \
    && pg_owner_run "$PG_BIN/pg_ctl" status -D "$PG_DATA" >/dev/null 2>&1
}

# One SQL statement over TCP as $POSTGRES_USER (password in $PG_PASSWORD); prints the rows.
pg_sql() {
  PGPASSWORD=$PG_PASSWORD PGCONNECT_TIMEOUT=10 "$PG_BIN/psql" -h 127.0.0.1 -p "$POSTGRES_PORT" \
    -U "$POSTGRES_USER" -d postgres -qtAX -v ON_ERROR_STOP=1 -c "$1"
}

# A SQLAlchemy URL of one of the cluster's databases: pg_url SCHEME DATABASE.
pg_url() {
  local password
  password=$(printf '%s' "$PG_PASSWORD" \
    | "$BIN/python" -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.stdin.read(), safe=""))')
  printf '%s://%s:%s@127.0.0.1:%s/%s' "$1" "$POSTGRES_USER" "$password" "$POSTGRES_PORT" "$2"
}

pg_init() {
  mkdir -p "$PG_DIR"
  chmod 700 "$PG_DIR"
  if ((EUID == 0)); then
    chown postgres:postgres "$PG_DIR"
    if ! runuser -u postgres -- test -w "$PG_DIR"; then
      echo "error: the postgres user cannot reach $PG_DIR (PostgreSQL refuses to run as root, so as" \
        "root its cluster runs as postgres): every folder above STATE must be searchable by others" \
        "(chmod o+x), or use a STATE elsewhere" >&2
      return 1
    fi
  fi
  local pwfile="$PG_DIR/initdb.password"
  (umask 077 && printf '%s\n' "$PG_PASSWORD" >"$pwfile")
  if ((EUID == 0)); then chown postgres:postgres "$pwfile"; fi
  if ! pg_owner_run "$PG_BIN/initdb" -D "$PG_DATA" -U "$POSTGRES_USER" --pwfile="$pwfile" \
    --auth=scram-sha-256 --encoding=UTF8 --no-locale >"$PG_DIR/initdb.log" 2>&1; then
    rm -f "$pwfile"
    echo "error: initdb failed; see $PG_DIR/initdb.log" >&2
    tail -n 20 "$PG_DIR/initdb.log" >&2
    return 1
  fi
  rm -f "$pwfile"
  cat >>"$PG_DATA/postgresql.conf" <<CONF

# onnxforge team stack: TCP on the loopback only, no Unix socket; the port is given at each start.
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
CONF
  echo "created a PostgreSQL cluster in $PG_DATA (role $POSTGRES_USER)"
}

# Initialise the cluster on the first start, start it, check the password, create the databases.
pg_start() {
  if [[ ! "$POSTGRES_USER" =~ ^[a-z_][a-z0-9_]*$ ]]; then
    echo "error: POSTGRES_USER must be a lower-case name (letters, digits, _)" >&2
    return 2
  fi
  if [[ ! -f "$PG_DATA/PG_VERSION" ]]; then
    pg_init || return 1
  fi
  if ! pg_owner_run "$PG_BIN/pg_ctl" start -D "$PG_DATA" -l "$PG_DIR/postgres.log" -w -t 120 \
    -o "-p $POSTGRES_PORT" >/dev/null; then
    echo "error: PostgreSQL did not start on port $POSTGRES_PORT; see $PG_DIR/postgres.log" >&2
    tail -n 20 "$PG_DIR/postgres.log" >&2
    return 1
  fi
  if ! pg_sql 'SELECT 1' >/dev/null; then
    echo "error: PostgreSQL refuses $POSTGRES_USER with this password: it was set when the cluster" \
      "was created in $PG_DATA; give that one as POSTGRES_PASSWORD (or keep" \
      "$STATE/postgres_password), or start from an empty STATE" >&2
    return 2
  fi
  local database
  for database in "${PG_DATABASES[@]}"; do
    if [[ -z "$(pg_sql "SELECT 1 FROM pg_database WHERE datname = '$database'")" ]]; then
      pg_sql "CREATE DATABASE $database" || return 1
    fi
  done
}

pg_stop() {
  pg_running || return 0
  pg_owner_run "$PG_BIN/pg_ctl" stop -D "$PG_DATA" -m fast -w -t 60 >/dev/null
  echo "stopped PostgreSQL ($PG_DATA)"
}
