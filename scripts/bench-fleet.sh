#!/usr/bin/env bash
# Benchmark (not a test) of the distributed path on loopback: JOBS tiny images go plan → SQS →
# worker(s) → DynamoDB ledger (moto) with 1, 2 and 4 workers, and the same images through the
# one-machine `sync`. Prints jobs per second, the per-job overhead of the distributed path, and
# how throughput scales with workers. Each round gets fresh resources and a fresh destination.
set -euo pipefail
cd "$(dirname "$0")/.."
REPOS=${REPOS:-4}
TAGS=${TAGS:-50}
WORKERS=${WORKERS:-"1 2 4"}
CONCURRENCY=${CONCURRENCY:-16}
cargo build --release -q -p ecr-sync-planner -p ecr-sync-worker -p ecr-sync-testkit
source scripts/lib.sh
BIN=target/release
start_moto
moto_pid=$MOTO_PID
# CPU seconds a process has used (user + system).
cpu_s() { python3 -c "import os; f=open('/proc/$1/stat').read().rsplit(')',1)[1].split(); print((int(f[11])+int(f[12]))/os.sysconf('SC_CLK_TCK'))"; }

start_registry SRC
$BIN/ecr-sync-testkit seed --registry "http://$REG_SRC" --prefix fleet --repos "$REPOS" --tags "$TAGS" --layer-bytes 512 | tail -1
repos=(); for i in $(seq 0 $((REPOS - 1))); do repos+=("fleet/app$i"); done
jobs=$((REPOS * TAGS))

# The one-machine sync of the same images.
start_registry SYNCDST
sync_config "$WORK/sync.json" "$REG_SRC" "$REG_SYNCDST" "${repos[@]}"
t0=$(now)
$BIN/ecr-sync sync --config "$WORK/sync.json" --ledger "$WORK/l.db" --concurrency "$CONCURRENCY" --no-progress >"$WORK/sync.log" 2>&1 || { tail -5 "$WORK/sync.log"; exit 1; }
sync_s=$(elapsed "$t0" "$(now)")

# Jobs that ended well: succeeded, or skipped (a redelivered job whose copy had already landed).
finished() { $BIN/ecr-sync status "$1" --json 2>/dev/null | python3 -c 'import json,sys; s=json.load(sys.stdin)["states"]; print(s.get("succeeded", 0) + s.get("skipped", 0))'; }

declare -A fleet_s plan_s moto_cpu
round=0
for w in $WORKERS; do
  round=$((round + 1))
  curl -fsS -X POST "$AWS_ENDPOINT_URL/moto-api/reset" >/dev/null
  eval "$($BIN/ecr-sync bootstrap --name "bench$round")"
  export ECR_SYNC_QUEUE_URL ECR_SYNC_DLQ_URL ECR_SYNC_LEDGER_TABLE
  start_registry "DST$round"
  dst_var="REG_DST$round"
  sync_config "$WORK/fleet$round.json" "$REG_SRC" "${!dst_var}" "${repos[@]}"
  export ECR_SYNC_CONFIG="$WORK/fleet$round.json"
  # Workers first, idle on the queue, so the clock measures the path and not process start.
  pids=()
  for i in $(seq "$w"); do
    $BIN/ecr-sync-worker --concurrency "$CONCURRENCY" --wait-seconds 1 >"$WORK/w$round-$i.out" 2>"$WORK/w$round-$i.err" &
    pids+=($!); STARTED_PIDS+=($!)
  done
  sleep 1
  t0=$(now); moto0=$(cpu_s "$moto_pid")
  run=$($BIN/ecr-sync plan --json 2>"$WORK/plan$round.err" | python3 -c 'import json,sys; print(json.load(sys.stdin)["run_id"])')
  plan_s[$w]=$(elapsed "$t0" "$(now)")
  deadline=$(( $(date +%s) + 600 ))
  until [ "$(finished "$run")" -ge "$jobs" ]; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "round with $w workers did not finish in 600 s"; tail -3 "$WORK/w$round-1.err"; exit 1; }
    sleep 0.5
  done
  fleet_s[$w]=$(elapsed "$t0" "$(now)")
  moto_cpu[$w]=$(elapsed "$moto0" "$(cpu_s "$moto_pid")")
  for p in "${pids[@]}"; do kill -TERM "$p"; done
  for p in "${pids[@]}"; do wait "$p" || true; done
done

python3 - "$jobs" "$sync_s" "$WORKERS" "$(for w in $WORKERS; do printf '%s ' "${fleet_s[$w]}"; done)" "$(for w in $WORKERS; do printf '%s ' "${plan_s[$w]}"; done)" "$(for w in $WORKERS; do printf '%s ' "${moto_cpu[$w]}"; done)" <<'PY'
import sys
jobs, sync_s = int(sys.argv[1]), float(sys.argv[2])
workers = [int(w) for w in sys.argv[3].split()]
fleet = [float(x) for x in sys.argv[4].split()]
plan = [float(x) for x in sys.argv[5].split()]
moto = [float(x) for x in sys.argv[6].split()]
print(f"fleet benchmark: {jobs} tiny images, moto for SQS + DynamoDB, docker-registry on loopback")
print(f"{'path':<22}{'seconds':>9}{'jobs/s':>9}{'plan s':>9}{'vs 1 worker':>13}{'moto CPU':>10}")
print(f"{'sync (one process)':<22}{sync_s:>9.2f}{jobs / sync_s:>9.1f}{'':>9}{'':>13}{'':>10}")
for w, f, p, m in zip(workers, fleet, plan, moto):
    print(f"{f'fleet, {w} worker(s)':<22}{f:>9.2f}{jobs / f:>9.1f}{p:>9.2f}{fleet[0] / f:>12.2f}x{100 * m / f:>9.0f}%")
print("moto CPU: moto_server's CPU time over the round's wall time; near 100% it is one busy core")
print("(Python), and the fleet cannot go faster than moto answers.")
print(f"per-job overhead of the distributed path (1 worker vs sync): {(fleet[0] - sync_s) / jobs * 1000:.1f} ms")
PY
