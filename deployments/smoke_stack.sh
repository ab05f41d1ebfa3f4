#!/usr/bin/env bash
# Smoke test of the team stack with a fleet of workers, in a temporary folder; no arguments.
#
# Starts the PostgreSQL-backed Prefect and MLflow servers (deployments/start_servers.sh,
# BACKEND=postgres) on free ports, two process workers on the pools cpu-a and cpu-b (each in a
# folder of its own, sharing nothing with the flow but the servers), runs the default recipe with
# its CPU benchmark mapped to cpu-b, and checks that every CPU benchmark row of the version it
# registered was measured by the cpu-b worker. Then it stops everything it started and removes
# the folder (KEEP=1 keeps it, with the logs). Exit 0 only when all of that held; the last line
# printed is a one-line summary.
#
#   BIN (.venv/bin), RECIPE (configs/digits_cnn.yaml), KEEP (0)
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$REPO/.venv/bin}
RECIPE=${RECIPE:-$REPO/configs/digits_cnn.yaml}
KEEP=${KEEP:-0}
POOLS=(cpu-a cpu-b)
MEASURING_POOL=cpu-b

ROOT=$(mktemp -d "${TMPDIR:-/tmp}/onnxforge-smoke.XXXXXX")
chmod 755 "$ROOT" # as root, the cluster runs as the postgres user, which must enter it
STATE="$ROOT/servers"
LOG="$ROOT/smoke.log"
WORKER_PIDS=()
RESULT="FAIL"
DETAIL="did not get past the start"

say() { echo "smoke_stack: $*"; }
free_port() { "$BIN/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Live processes that carry ROOT in their environment or command line: the servers, the
# cluster, the workers, and the flow runs and measuring processes the workers started in
# sessions of their own.
ours() {
  local proc pid
  for proc in /proc/[0-9]*; do
    pid=${proc#/proc/}
    [[ "$pid" == "$$" || "$pid" == "$BASHPID" ]] && continue
    if grep -qsF -- "$ROOT" "$proc/environ" "$proc/cmdline" 2>/dev/null \
      && [[ "$(awk '{print $3}' "$proc/stat" 2>/dev/null)" != Z ]]; then
      echo "$pid"
    fi
  done
}

cleanup() {
  trap '' INT TERM # a second Ctrl-C must not stop the cleanup halfway
  local leftover=""
  for pid in "${WORKER_PIDS[@]}"; do
    kill -TERM -- "-$pid" 2>/dev/null
  done
  for pid in "${WORKER_PIDS[@]}"; do
    for _ in $(seq 1 20); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
    kill -KILL -- "-$pid" 2>/dev/null
  done
  STATE=$STATE bash "$REPO/deployments/stop_servers.sh" >>"$LOG" 2>&1
  # Anything of ours still alive after the stops is a failure; it is killed all the same.
  sleep 1
  leftover=$(ours | tr '\n' ' ')
  if [[ -n "$leftover" ]]; then
    RESULT="FAIL"
    DETAIL="$DETAIL; still running after the stop (killed): $leftover"
    # shellcheck disable=SC2086
    kill -KILL $leftover 2>/dev/null
  fi
  if [[ "$RESULT" != PASS || "$KEEP" == 1 ]]; then
    say "logs kept in $ROOT"
  else
    rm -rf "$ROOT"
  fi
  echo "smoke_stack: $RESULT: $DETAIL"
  [[ "$RESULT" == PASS ]]
}
trap 'cleanup; exit $?' EXIT
trap 'DETAIL="interrupted"; exit 130' INT TERM

fail() {
  DETAIL="$1"
  [[ -f "$LOG" ]] && tail -n 30 "$LOG" >&2
  exit 1
}

export PREFECT_PORT MLFLOW_PORT POSTGRES_PORT
PREFECT_PORT=$(free_port)
MLFLOW_PORT=$(free_port)
POSTGRES_PORT=$(free_port)
say "stack in $STATE (Prefect :$PREFECT_PORT, MLflow :$MLFLOW_PORT, PostgreSQL :$POSTGRES_PORT)"
# Credentials are generated into $STATE/credentials.env: the caller's own are not used.
unset PREFECT_API_AUTH_STRING MLFLOW_TRACKING_USERNAME MLFLOW_TRACKING_PASSWORD PREFECT_API_URL \
  MLFLOW_TRACKING_URI ONNXFORGE_HOME PREFECT_HOME
BACKEND=postgres STATE=$STATE bash "$REPO/deployments/start_servers.sh" >>"$LOG" 2>&1 \
  || fail "the stack did not start (see $LOG)"
# shellcheck disable=SC1091
source "$STATE/credentials.env"
export PREFECT_API_URL="http://127.0.0.1:$PREFECT_PORT/api"
export MLFLOW_TRACKING_URI="http://127.0.0.1:$MLFLOW_PORT"
export PREFECT_SERVER_ANALYTICS_ENABLED=false

for pool in "${POOLS[@]}"; do
  # A locked pool (no job variable reaches its workers), as docs/security.md says to make one.
  "$BIN/python" "$REPO/deployments/deploy.py" --pool "$pool" --pool-only >>"$LOG" 2>&1 \
    || fail "could not create work pool $pool"
  folder="$ROOT/worker-$pool"
  mkdir -p "$folder"
  # Its own folder, Prefect home and onnxforge state: only the servers are shared.
  (cd "$folder" && PREFECT_HOME="$folder/prefect" ONNXFORGE_HOME="$folder/state" \
    PREFECT_WORKER_HEARTBEAT_SECONDS=10 \
    exec setsid "$BIN/prefect" worker start --pool "$pool" --name "smoke-$pool" \
    >"$folder/worker.log" 2>&1 </dev/null) &
  WORKER_PIDS+=($!)
done
say "workers smoke-cpu-a and smoke-cpu-b started"

FLOW_DIR="$ROOT/flow"
mkdir -p "$FLOW_DIR"
say "running $(basename "$RECIPE") with CPUExecutionProvider measured on pool $MEASURING_POOL"
(cd "$FLOW_DIR" && PREFECT_HOME="$FLOW_DIR/prefect" ONNXFORGE_HOME="$FLOW_DIR/state" \
  "$BIN/onnxforge" run "$RECIPE" --set "benchmark.pools.CPUExecutionProvider=$MEASURING_POOL") \
  >>"$LOG" 2>&1 || fail "onnxforge run failed (see $LOG)"

# The registered version's rows: its run's benchmark/bench.json.
if ! DETAIL=$("$BIN/python" "$REPO/deployments/smoke_check.py" "$RECIPE" "$MEASURING_POOL" \
  "smoke-$MEASURING_POOL" 2>>"$LOG"); then
  fail "${DETAIL:-the check of the registered version failed (see $LOG)}"
fi
RESULT="PASS"
