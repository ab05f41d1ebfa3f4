#!/usr/bin/env bash
# Server mode with authentication: a Prefect server (API auth string, CORS limited to its own UI)
# and an MLflow tracking server (basic-auth app, proxied artifacts) in the background.
#
# BACKEND=sqlite (default, `make server`): both keep their data in SQLite files under STATE.
# BACKEND=postgres (`make stack`, the team stack): a PostgreSQL 15 cluster under $STATE/postgres
# (deployments/postgres.sh) holds Prefect's database and MLflow's tracking and auth stores.
# Either way MLflow proxies the artifacts (clients log to `mlflow-artifacts:` URIs), so no client
# or worker needs this machine's disk.
#
# Credentials come from the environment: PREFECT_API_AUTH_STRING ("user:password"),
# MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (12+ characters), the same variables the
# clients read. When none is set, random ones are generated once into $STATE/credentials.env
# (mode 0600) and reused on later starts. Nothing secret is written into the repository.
#
#   STATE (default .onnxforge/servers), PREFECT_PORT (4200), MLFLOW_PORT (5000), HOST (127.0.0.1),
#   START_TIMEOUT_S (300), and for BACKEND=postgres the variables deployments/postgres.sh names.
# Stop them with deployments/stop_servers.sh (same STATE): servers first, then the cluster.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$REPO/.venv/bin}
BACKEND=${BACKEND:-sqlite}
STATE=${STATE:-$REPO/.onnxforge/servers}
HOST=${HOST:-127.0.0.1}
PREFECT_PORT=${PREFECT_PORT:-4200}
MLFLOW_PORT=${MLFLOW_PORT:-5000}
START_TIMEOUT_S=${START_TIMEOUT_S:-300}
if [[ "$BACKEND" != sqlite && "$BACKEND" != postgres ]]; then
  echo "error: BACKEND must be sqlite or postgres, not '$BACKEND'" >&2
  exit 2
fi
mkdir -p "$STATE/prefect"
STATE=$(cd "$STATE" && pwd)
CREDENTIALS="$STATE/credentials.env"
# shellcheck source=deployments/postgres.sh
source "$REPO/deployments/postgres.sh"
stop_all() { STATE=$STATE bash "$REPO/deployments/stop_servers.sh" >/dev/null 2>&1 || true; }

for name in prefect mlflow; do
  if [[ -f "$STATE/$name.pid" ]] && kill -0 "$(cat "$STATE/$name.pid")" 2>/dev/null; then
    echo "error: the $name server of $STATE is already running (pid $(cat "$STATE/$name.pid")); stop it with deployments/stop_servers.sh" >&2
    exit 1
  fi
done
if pg_running; then
  echo "error: the PostgreSQL cluster of $STATE is already running; stop it with deployments/stop_servers.sh" >&2
  exit 1
fi

random_secret() { "$BIN/python" -c 'import secrets; print(secrets.token_urlsafe(24))'; }
# The content of a server-side secret file, generated (mode 0600) on the first start.
secret_file() {
  [[ -f "$1" ]] || (umask 077 && random_secret >"$1")
  cat "$1"
}

given=0
for var in PREFECT_API_AUTH_STRING MLFLOW_TRACKING_USERNAME MLFLOW_TRACKING_PASSWORD; do
  [[ -n "${!var:-}" ]] && given=$((given + 1))
done
if ((given == 0)); then
  if [[ ! -f "$CREDENTIALS" ]]; then
    (
      umask 077
      cat >"$CREDENTIALS" <<CREDS
export PREFECT_API_AUTH_STRING='admin:$(random_secret)'
export MLFLOW_TRACKING_USERNAME='admin'
export MLFLOW_TRACKING_PASSWORD='$(random_secret)'
CREDS
    )
    echo "generated credentials into $CREDENTIALS (mode 0600)"
  fi
  # shellcheck disable=SC1090
  source "$CREDENTIALS"
elif ((given < 3)); then
  echo "error: set all of PREFECT_API_AUTH_STRING, MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or none (then random ones are generated into $CREDENTIALS)" >&2
  exit 2
fi
if [[ "$PREFECT_API_AUTH_STRING" != *:* ]]; then
  echo "error: PREFECT_API_AUTH_STRING must look like user:password" >&2
  exit 2
fi
if ((${#MLFLOW_TRACKING_PASSWORD} < 12)); then
  echo "error: MLFLOW_TRACKING_PASSWORD must have at least 12 characters (MLflow's basic-auth rule)" >&2
  exit 2
fi

# The Flask secret signs MLflow's CSRF tokens; a server-side secret, never needed by clients.
MLFLOW_SECRET_KEY=$(secret_file "$STATE/mlflow_secret_key")

# Where the servers keep their data (MLflow through psycopg2: SQLAlchemy 2.1 would pick psycopg 3,
# which is not installed). The database URLs reach the servers through their
# environment (never their command lines, which every local user can read).
# Prefect's own default on SQLite: prefect.db in its PREFECT_HOME.
PREFECT_DATABASE_URL="sqlite+aiosqlite:///$STATE/prefect/prefect.db"
if [[ "$BACKEND" == postgres ]]; then
  PG_PASSWORD=${POSTGRES_PASSWORD:-$(secret_file "$STATE/postgres_password")}
  pg_start || {
    status=$?
    stop_all
    exit "$status"
  }
  PREFECT_DATABASE_URL=$(pg_url postgresql+asyncpg prefect)
  MLFLOW_STORE=$(pg_url postgresql+psycopg2 mlflow)
  AUTH_STORE=$(pg_url postgresql+psycopg2 mlflow_auth)
  ARTIFACTS="$STATE/mlartifacts-postgres"
else
  MLFLOW_STORE="sqlite:///$STATE/mlflow.db"
  AUTH_STORE="sqlite:///$STATE/mlflow_auth.db"
  ARTIFACTS="$STATE/mlartifacts"
fi
mkdir -p "$ARTIFACTS"

# MLflow's auth settings: users live in their own store; the admin user is created on the first
# start from MLFLOW_AUTH_ADMIN_USERNAME / MLFLOW_AUTH_ADMIN_PASSWORD (passed below, so the admin
# password is in no file). Users the admin adds later may read every experiment (READ). The file
# holds the auth store's URL (with the database password on PostgreSQL): mode 0600, and `%`
# doubled for configparser.
AUTH_INI="$STATE/mlflow_auth.ini"
rm -f "$AUTH_INI" # written afresh below with umask 077: an older file may be world-readable
(
  umask 077
  cat >"$AUTH_INI" <<INI
[mlflow]
default_permission = READ
database_uri = ${AUTH_STORE//%/%%}
admin_username = $MLFLOW_TRACKING_USERNAME
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
)
chmod 600 "$AUTH_INI"

# The stores (prefect.db, mlflow.db, mlflow_auth.db with its password hashes) and everything else
# the servers write are private to this user: the servers inherit this umask. Stores an earlier
# start left readable by others are made private too.
umask 077
for store in "$STATE/prefect/prefect.db" "$STATE/mlflow.db" "$STATE/mlflow_auth.db"; do
  if [[ -f "$store" ]]; then chmod 600 "$store"; fi
done

UI_ORIGIN="http://$HOST:$PREFECT_PORT"
PREFECT_HOME="$STATE/prefect" PREFECT_SERVER_ANALYTICS_ENABLED=false \
  PREFECT_SERVER_API_AUTH_STRING="$PREFECT_API_AUTH_STRING" \
  PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS="$UI_ORIGIN" PREFECT_UI_API_URL="$UI_ORIGIN/api" \
  PREFECT_API_DATABASE_CONNECTION_URL="$PREFECT_DATABASE_URL" \
  setsid nohup "$BIN/prefect" server start --host "$HOST" --port "$PREFECT_PORT" \
  >"$STATE/prefect.log" 2>&1 </dev/null &
echo $! >"$STATE/prefect.pid"

# MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false: MLflow 3.17's job runner (GenAI scorers, which
# onnxforge never uses) otherwise starts seven huey consumer processes; measured here, each had
# used about 4% of a core over its first 100 s (ps), a quarter of a core in all: on a 2-core host
# that also measures benchmarks, that is noise.
MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false} \
  MLFLOW_AUTH_CONFIG_PATH="$AUTH_INI" \
  MLFLOW_AUTH_ADMIN_USERNAME="$MLFLOW_TRACKING_USERNAME" \
  MLFLOW_AUTH_ADMIN_PASSWORD="$MLFLOW_TRACKING_PASSWORD" \
  MLFLOW_FLASK_SERVER_SECRET_KEY="$MLFLOW_SECRET_KEY" MLFLOW_BACKEND_STORE_URI="$MLFLOW_STORE" \
  setsid nohup "$BIN/mlflow" server --app-name basic-auth --host "$HOST" --port "$MLFLOW_PORT" \
  --artifacts-destination "$ARTIFACTS" \
  >"$STATE/mlflow.log" 2>&1 </dev/null &
echo $! >"$STATE/mlflow.pid"

for _ in $(seq 1 $((START_TIMEOUT_S / 2))); do
  if curl -fs "http://$HOST:$PREFECT_PORT/api/health" >/dev/null \
    && curl -fs "http://$HOST:$MLFLOW_PORT/health" >/dev/null; then
    # /health needs no login: check that the credentials clients will use are accepted (the
    # admin password is set on the first start only and kept in mlflow_auth.db).
    if ! curl -fs -u "$MLFLOW_TRACKING_USERNAME:$MLFLOW_TRACKING_PASSWORD" \
      "http://$HOST:$MLFLOW_PORT/api/2.0/mlflow/experiments/search?max_results=1" >/dev/null; then
      echo "error: MLflow refuses MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD: its admin" \
        "password was set on the first start in $STATE (mlflow_auth.db); use that one, change it" \
        "with MLflow's user API, or start from an empty STATE" >&2
      stop_all
      exit 2
    fi
    if [[ -f "$CREDENTIALS" ]] && ((given == 0)); then
      exports="source $CREDENTIALS"
    else
      exports="# PREFECT_API_AUTH_STRING, MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD: as given"
    fi
    cat <<MSG
Prefect UI: $UI_ORIGIN (log in with PREFECT_API_AUTH_STRING)   MLflow UI: http://$HOST:$MLFLOW_PORT (MLFLOW_TRACKING_USERNAME / _PASSWORD)
In every shell that runs flows, workers or the CLI:
export PREFECT_API_URL=$UI_ORIGIN/api
export MLFLOW_TRACKING_URI=http://$HOST:$MLFLOW_PORT
$exports
Stop them with: STATE=$STATE bash $REPO/deployments/stop_servers.sh
MSG
    if [[ "$BACKEND" == postgres ]]; then
      echo "PostgreSQL: 127.0.0.1:$POSTGRES_PORT, role $POSTGRES_USER, databases ${PG_DATABASES[*]}," \
        "data in $PG_DATA (clients never connect to it)"
    fi
    exit 0
  fi
  for name in prefect mlflow; do
    if ! kill -0 "$(cat "$STATE/$name.pid")" 2>/dev/null; then
      echo "error: the $name server exited; see $STATE/$name.log" >&2
      tail -n 20 "$STATE/$name.log" >&2
      stop_all
      exit 1
    fi
  done
  sleep 2
done
echo "error: servers did not answer within $START_TIMEOUT_S s; see $STATE/prefect.log and $STATE/mlflow.log" >&2
stop_all
exit 1
