#!/usr/bin/env bash
# Stop the servers deployments/start_servers.sh started (same STATE): each runs in its own
# process group (setsid), so the group is signalled, workers included. Then, where the team stack
# (BACKEND=postgres) runs its PostgreSQL cluster in STATE, that stops too (`pg_ctl stop -m fast`).
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
STATE=${STATE:-$REPO/.onnxforge/servers}
[[ -d "$STATE" ]] || exit 0
STATE=$(cd "$STATE" && pwd)
# shellcheck source=deployments/postgres.sh
source "$REPO/deployments/postgres.sh"
for name in prefect mlflow; do
  pidfile="$STATE/$name.pid"
  [[ -f "$pidfile" ]] || continue
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
    for _ in $(seq 1 30); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
    echo "stopped the $name server (process group $pid)"
  fi
  rm -f "$pidfile"
done
pg_stop
