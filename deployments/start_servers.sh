#!/usr/bin/env bash
# Server mode: a Prefect server and an MLflow tracking server (SQLite + local artifacts) in the
# background, state under .onnxforge/servers. Prints the variables to export in other shells.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
STATE=.onnxforge/servers
mkdir -p "$STATE/prefect" "$STATE/mlartifacts"
PREFECT_PORT=${PREFECT_PORT:-4200}
MLFLOW_PORT=${MLFLOW_PORT:-5000}

PREFECT_HOME="$PWD/$STATE/prefect" PREFECT_SERVER_ANALYTICS_ENABLED=false \
  nohup "$BIN/prefect" server start --host 127.0.0.1 --port "$PREFECT_PORT" \
  >"$STATE/prefect.log" 2>&1 &
echo $! >"$STATE/prefect.pid"

nohup "$BIN/mlflow" server --host 127.0.0.1 --port "$MLFLOW_PORT" \
  --backend-store-uri "sqlite:///$PWD/$STATE/mlflow.db" \
  --artifacts-destination "$PWD/$STATE/mlartifacts" \
  >"$STATE/mlflow.log" 2>&1 &
echo $! >"$STATE/mlflow.pid"

for _ in $(seq 1 90); do
  if curl -fs "http://127.0.0.1:$PREFECT_PORT/api/health" >/dev/null \
    && curl -fs "http://127.0.0.1:$MLFLOW_PORT/health" >/dev/null; then
    cat <<MSG
Prefect UI: http://127.0.0.1:$PREFECT_PORT   MLflow UI: http://127.0.0.1:$MLFLOW_PORT
export PREFECT_API_URL=http://127.0.0.1:$PREFECT_PORT/api
export MLFLOW_TRACKING_URI=http://127.0.0.1:$MLFLOW_PORT
export ONNXFORGE_PROJECT_DIR=$PWD
Stop them with: kill \$(cat $STATE/prefect.pid) \$(cat $STATE/mlflow.pid)
MSG
    exit 0
  fi
  sleep 2
done
echo "servers did not answer within 180 s; see $STATE/prefect.log and $STATE/mlflow.log" >&2
exit 1
