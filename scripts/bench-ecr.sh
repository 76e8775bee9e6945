#!/usr/bin/env bash
# Benchmark (not a test) against testkit's local ECR, which applies ECR's rules: PutImage at
# RATE per second (ECR's default quota: 10) answered with 429 TOOMANYREQUESTS and no
# Retry-After, immutable tags that answer TAG_INVALID to any second push, refused mounts,
# redirected blob GETs. Rounds, each with fresh resources:
#   1. sync: TAGS single-layer tags into the local ECR;
#   2. fleet: the same tags, plan → SQS → WORKERS workers × CONCURRENCY jobs (moto for AWS);
#   3. lost answers: LOSE manifest PUT answers lost on an immutable destination (sync);
#   4. warm: ECR on both sides (one local ECR, src/ → dst/), the second sync of an equal copy.
# Reports wall time against the quota's ideal (TAGS / RATE), PutImage calls throttled, jobs
# failed or dead-lettered, and the registry requests of the warm run.
set -euo pipefail
cd "$(dirname "$0")/.."
REPOS=${REPOS:-6}
TAGS_PER_REPO=${TAGS_PER_REPO:-100}
WORKERS=${WORKERS:-4}
CONCURRENCY=${CONCURRENCY:-16}
RATE=${RATE:-10}
LOSE=${LOSE:-20}
cargo build --release -q -p ecr-sync-planner -p ecr-sync-worker -p ecr-sync-testkit
source scripts/lib.sh
BIN=target/release
json_get() { python3 -c "import json,sys; print(json.load(open('$1'))$2)"; }
start_moto
reset_moto() { curl -fsS -X POST "$AWS_ENDPOINT_URL/moto-api/reset" >/dev/null; }

start_registry SRC
$BIN/ecr-sync-testkit seed --registry "http://$REG_SRC" --prefix bench --repos "$REPOS" --tags "$TAGS_PER_REPO" --layer-bytes 512 | tail -1
repos=(); for i in $(seq 0 $((REPOS - 1))); do repos+=("bench/app$i"); done
tags=$((REPOS * TAGS_PER_REPO))

# start_ecr NAME [local-ecr args...] -> ECR_URL, ECR_HOST, ECR_PID; counts in $WORK/NAME.counts
start_ecr() {
  local name=$1; shift
  $BIN/ecr-sync-testkit local-ecr --moto "$AWS_ENDPOINT_URL" --put-image-rate "$RATE" \
    --counts "$WORK/$name.counts" "$@" >"$WORK/$name.ecr" 2>"$WORK/$name.ecr.err" &
  ECR_PID=$!; STARTED_PIDS+=($ECR_PID)
  for _ in $(seq 200); do [ -s "$WORK/$name.ecr" ] && break; sleep 0.1; done
  ECR_URL=$(json_get "$WORK/$name.ecr" '["url"]'); ECR_HOST=$(json_get "$WORK/$name.ecr" '["host"]')
}
stop_ecr() { kill -TERM "$ECR_PID"; wait "$ECR_PID" || true; }
put_stats() { python3 -c "import json; c=json.load(open('$WORK/$1.counts'))['PutImage']; print(c['calls'], c['throttled'])"; }

# ecr_config FILE IMMUTABLE SRC_HOST SRC_PREFIX DST_PREFIX -> SRC_HOST/SRC_PREFIX... into the local ECR
ecr_config() {
  python3 - "$@" "$ECR_HOST" "$ECR_URL" "${repos[@]}" <<'PY'
import json, sys
file, immutable, src, src_prefix, dst_prefix, host, url, *repos = sys.argv[1:]
regs = {host: {"endpoint": url, "plain_http": True}}
if src != host:
    regs[src] = {"plain_http": True}
json.dump({"mode": "create",
           "repos": [{"source": f"{src}/{src_prefix}{r}", "destination": f"{dst_prefix}{r}"} for r in repos],
           "repo_defaults": {"tag_immutability": immutable == "true", "scan_on_push": False},
           "destination_registry": host, "registries": regs}, open(file, "w"), indent=2)
PY
}
# sync_into NAME CONFIG -> wall seconds in SYNC_S; report in $WORK/NAME.report
sync_into() {
  local t0; t0=$(now)
  set +e
  $BIN/ecr-sync sync --config "$2" --ledger "$WORK/$1.db" --report "$WORK/$1.report" \
    --concurrency "$CONCURRENCY" --no-progress >"$WORK/$1.log" 2>&1
  SYNC_CODE=$?
  set -e
  SYNC_S=$(elapsed "$t0" "$(now)")
}

echo "== 1. sync: $tags tags into the local ECR, PutImage $RATE/s"
reset_moto; start_ecr sync
ecr_config "$WORK/sync.json" false "$REG_SRC" "" ""
sync_into sync "$WORK/sync.json"
s_s=$SYNC_S
stop_ecr
read -r s_puts s_thr < <(put_stats sync)
s_failed=$(json_get "$WORK/sync.report" '["failed"]'); s_copied=$(json_get "$WORK/sync.report" '["copied"]')

echo "== 2. fleet: $WORKERS workers × $CONCURRENCY jobs"
reset_moto; start_ecr fleet
eval "$($BIN/ecr-sync bootstrap --name benchecr)"
export ECR_SYNC_QUEUE_URL ECR_SYNC_DLQ_URL ECR_SYNC_LEDGER_TABLE
ecr_config "$WORK/fleet.json" false "$REG_SRC" "" ""
export ECR_SYNC_CONFIG="$WORK/fleet.json"
pids=()
for i in $(seq "$WORKERS"); do
  $BIN/ecr-sync-worker --concurrency "$CONCURRENCY" --wait-seconds 1 >"$WORK/w$i.out" 2>"$WORK/w$i.err" &
  pids+=($!); STARTED_PIDS+=($!)
done
sleep 1
t0=$(now)
run=$($BIN/ecr-sync plan --json 2>"$WORK/plan.err" | python3 -c 'import json,sys; print(json.load(sys.stdin)["run_id"])')
ended() { $BIN/ecr-sync status "$run" --json 2>/dev/null | python3 -c 'import json,sys; s=json.load(sys.stdin)["states"]; print(sum(v for k, v in s.items() if k not in ("queued", "running", "failed")))'; }
deadline=$(( $(date +%s) + 600 ))
until [ "$(ended)" -ge "$tags" ]; do
  [ "$(date +%s)" -lt "$deadline" ] || { echo "the fleet did not finish in 600 s"; tail -3 "$WORK/w1.err"; break; }
  sleep 0.5
done
f_s=$(elapsed "$t0" "$(now)")
for p in "${pids[@]}"; do kill -TERM "$p"; done
for p in "${pids[@]}"; do wait "$p" || true; done
stop_ecr
read -r f_puts f_thr < <(put_stats fleet)
f_states=$($BIN/ecr-sync status "$run" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["states"])')
f_dead=$($BIN/ecr-sync dlq list --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')

echo "== 3. lost answers: $LOSE manifest PUT answers lost, immutable destination"
reset_moto; start_ecr lost --lose-manifest-puts "$LOSE"
ecr_config "$WORK/lost.json" true "$REG_SRC" "" ""
sync_into lost "$WORK/lost.json"
stop_ecr
l_code=$SYNC_CODE; l_copied=$(json_get "$WORK/lost.report" '["copied"]'); l_failed=$(json_get "$WORK/lost.report" '["failed"]')

echo "== 4. warm: ECR on both sides (one local ECR, src/ -> dst/)"
reset_moto; start_ecr warm
ecr_config "$WORK/seed.json" false "$REG_SRC" "" "src/"
sync_into warm-seed "$WORK/seed.json"
ecr_config "$WORK/warm.json" false "$ECR_HOST" "src/" "dst/"
sync_into warm-cold "$WORK/warm.json"
sync_into warm "$WORK/warm.json"
w_s=$SYNC_S; w_code=$SYNC_CODE
w_skipped=$(json_get "$WORK/warm.report" '["skipped"]')
w_req=$(json_get "$WORK/warm.report" '["requests"]')
stop_ecr

python3 - <<PY
tags, rate = $tags, $RATE
ideal = tags / rate
def thr(calls, throttled):
    return f"{throttled}/{calls} ({100 * throttled / max(calls, 1):.1f} %)"
print()
print(f"local ECR benchmark: {tags} single-layer tags in $REPOS repositories, PutImage {rate}/s "
      f"(the quota's ideal: {ideal:.0f} s)")
print(f"{'round':<40}{'seconds':>9}{'x ideal':>9}  {'PutImage throttled':<22}outcome")
print(f"{'1. sync':<40}{$s_s:>9.1f}{$s_s / ideal:>9.2f}  {thr($s_puts, $s_thr):<22}"
      f"{$s_copied} copied, {$s_failed} failed")
print(f"{'2. fleet, $WORKERS workers x $CONCURRENCY jobs':<40}{$f_s:>9.1f}{$f_s / ideal:>9.2f}  "
      f"{thr($f_puts, $f_thr):<22}{$f_states}, {$f_dead} in the DLQ")
print(f"{'3. $LOSE answers lost, immutable (sync)':<40}{'':>9}{'':>9}  {'':<22}"
      f"exit $l_code, {$l_copied} copied, {$l_failed} failed")
print(f"{'4. warm, ECR on both sides (sync)':<40}{$w_s:>9.2f}{'':>9}  {'':<22}"
      f"exit $w_code, {$w_skipped} up to date; registry requests {$w_req}")
PY
