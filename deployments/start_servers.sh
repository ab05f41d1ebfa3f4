#!/usr/bin/env bash
# Server mode with authentication: a Prefect server (API auth string, CORS limited to its own UI)
# and an MLflow tracking server (basic-auth app; SQLite + local artifacts) in the background.
#
# Credentials come from the environment: PREFECT_API_AUTH_STRING ("user:password"),
# MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (12+ characters), the same variables the
# clients read. When none is set, random ones are generated once into $STATE/credentials.env
# (mode 0600) and reused on later starts. Nothing secret is written into the repository.
#
#   STATE (default .onnxforge/servers), PREFECT_PORT (4200), MLFLOW_PORT (5000), HOST (127.0.0.1)
# Stop them with deployments/stop_servers.sh (same STATE).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$REPO/.venv/bin}
STATE=${STATE:-$REPO/.onnxforge/servers}
HOST=${HOST:-127.0.0.1}
PREFECT_PORT=${PREFECT_PORT:-4200}
MLFLOW_PORT=${MLFLOW_PORT:-5000}
mkdir -p "$STATE/prefect" "$STATE/mlartifacts"
STATE=$(cd "$STATE" && pwd)
CREDENTIALS="$STATE/credentials.env"

for name in prefect mlflow; do
  if [[ -f "$STATE/$name.pid" ]] && kill -0 "$(cat "$STATE/$name.pid")" 2>/dev/null; then
    echo "error: the $name server of $STATE is already running (pid $(cat "$STATE/$name.pid")); stop it with deployments/stop_servers.sh" >&2
    exit 1
  fi
done

random_secret() { "$BIN/python" -c 'import secrets; print(secrets.token_urlsafe(24))'; }

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
SECRET_KEY_FILE="$STATE/mlflow_secret_key"
if [[ ! -f "$SECRET_KEY_FILE" ]]; then
  (umask 077 && random_secret >"$SECRET_KEY_FILE")
fi

# MLflow's auth settings: users live in their own SQLite file; the admin user is created on the
# first start from MLFLOW_AUTH_ADMIN_USERNAME / MLFLOW_AUTH_ADMIN_PASSWORD (passed below, so the
# password is in no file). Users the admin adds later may read every experiment (READ).
AUTH_INI="$STATE/mlflow_auth.ini"
cat >"$AUTH_INI" <<INI
[mlflow]
default_permission = READ
database_uri = sqlite:///$STATE/mlflow_auth.db
admin_username = $MLFLOW_TRACKING_USERNAME
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI

UI_ORIGIN="http://$HOST:$PREFECT_PORT"
PREFECT_HOME="$STATE/prefect" PREFECT_SERVER_ANALYTICS_ENABLED=false \
  PREFECT_SERVER_API_AUTH_STRING="$PREFECT_API_AUTH_STRING" \
  PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS="$UI_ORIGIN" PREFECT_UI_API_URL="$UI_ORIGIN/api" \
  setsid nohup "$BIN/prefect" server start --host "$HOST" --port "$PREFECT_PORT" \
  >"$STATE/prefect.log" 2>&1 </dev/null &
echo $! >"$STATE/prefect.pid"

MLFLOW_AUTH_CONFIG_PATH="$AUTH_INI" \
  MLFLOW_AUTH_ADMIN_USERNAME="$MLFLOW_TRACKING_USERNAME" \
  MLFLOW_AUTH_ADMIN_PASSWORD="$MLFLOW_TRACKING_PASSWORD" \
  MLFLOW_FLASK_SERVER_SECRET_KEY="$(cat "$SECRET_KEY_FILE")" \
  setsid nohup "$BIN/mlflow" server --app-name basic-auth --host "$HOST" --port "$MLFLOW_PORT" \
  --backend-store-uri "sqlite:///$STATE/mlflow.db" \
  --artifacts-destination "$STATE/mlartifacts" \
  >"$STATE/mlflow.log" 2>&1 </dev/null &
echo $! >"$STATE/mlflow.pid"

for _ in $(seq 1 90); do
  if curl -fs "http://$HOST:$PREFECT_PORT/api/health" >/dev/null \
    && curl -fs "http://$HOST:$MLFLOW_PORT/health" >/dev/null; then
    # /health needs no login: check that the credentials clients will use are accepted (the
    # admin password is set on the first start only and kept in mlflow_auth.db).
    if ! curl -fs -u "$MLFLOW_TRACKING_USERNAME:$MLFLOW_TRACKING_PASSWORD" \
      "http://$HOST:$MLFLOW_PORT/api/2.0/mlflow/experiments/search?max_results=1" >/dev/null; then
      echo "error: MLflow refuses MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD: its admin" \
        "password was set on the first start in $STATE (mlflow_auth.db); use that one, change it" \
        "with MLflow's user API, or start from an empty STATE" >&2
      STATE=$STATE bash "$REPO/deployments/stop_servers.sh" >/dev/null 2>&1 || true
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
    exit 0
  fi
  for name in prefect mlflow; do
    if ! kill -0 "$(cat "$STATE/$name.pid")" 2>/dev/null; then
      echo "error: the $name server exited; see $STATE/$name.log" >&2
      tail -n 20 "$STATE/$name.log" >&2
      STATE=$STATE bash "$REPO/deployments/stop_servers.sh" >/dev/null 2>&1 || true
      exit 1
    fi
  done
  sleep 2
done
echo "error: servers did not answer within 180 s; see $STATE/prefect.log and $STATE/mlflow.log" >&2
STATE=$STATE bash "$REPO/deployments/stop_servers.sh" >/dev/null 2>&1 || true
exit 1
