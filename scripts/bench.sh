#!/usr/bin/env bash
# Benchmark (not a test): in one run on local registries, sync (a) SMALL small single-layer
# images and (b) one image with a BIG_MIB MiB layer with ecr-sync and with skopeo, time a raw
# curl GET→PUT of the big blob, and print ratios, warm times, requests per tag and peak RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
SMALL_REPOS=${SMALL_REPOS:-10}
SMALL_TAGS=${SMALL_TAGS:-50}
BIG_MIB=${BIG_MIB:-512}
cargo build --release -q -p ecr-sync-planner -p ecr-sync-testkit
source scripts/lib.sh
BIN=target/release/ecr-sync-planner

now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2-$1:.2f}')"; }
ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
jq_() { python3 -c "import json,sys; r=json.load(open('$1')); print($2)"; }

start_registry SRC; start_registry DST1; start_registry DST2; start_registry DST3
target/release/ecr-sync-testkit seed --registry "http://$REG_SRC" --prefix bench --repos "$SMALL_REPOS" --tags "$SMALL_TAGS" --big-mib "$BIG_MIB" | tail -2
small_repos=(); for i in $(seq 0 $((SMALL_REPOS - 1))); do small_repos+=("bench/app$i"); done
ntags=$((SMALL_REPOS * SMALL_TAGS))

# --- small images
sync_config "$WORK/small.json" "$REG_SRC" "$REG_DST1" "${small_repos[@]}"
t0=$(now); $BIN sync --config "$WORK/small.json" --ledger "$WORK/l.db" --report "$WORK/small-cold.json" --no-progress >"$WORK/small-cold.log" 2>&1 || { tail -5 "$WORK/small-cold.log"; exit 1; }; t1=$(now)
ours_small_cold=$(elapsed "$t0" "$t1")
t0=$(now); $BIN sync --config "$WORK/small.json" --ledger "$WORK/l.db" --report "$WORK/small-warm.json" --no-progress >"$WORK/small-warm.log" 2>&1 || { tail -5 "$WORK/small-warm.log"; exit 1; }; t1=$(now)
ours_small_warm=$(elapsed "$t0" "$t1")
skopeo_sync() {
  for r in "${small_repos[@]}"; do
    skopeo sync --src docker --dest docker --src-tls-verify=false --dest-tls-verify=false "$REG_SRC/$r" "$REG_DST2/${r%/*}" >"$WORK/skopeo.log" 2>&1 || { tail -5 "$WORK/skopeo.log"; exit 1; }
  done
}
t0=$(now); skopeo_sync; t1=$(now); skopeo_small_cold=$(elapsed "$t0" "$t1")
t0=$(now); skopeo_sync; t1=$(now); skopeo_small_warm=$(elapsed "$t0" "$t1")

# --- big layer
sync_config "$WORK/big.json" "$REG_SRC" "$REG_DST1" bench/big
t0=$(now); $BIN sync --config "$WORK/big.json" --ledger "$WORK/l.db" --report "$WORK/big.json.report" --no-progress >"$WORK/big.log" 2>&1 || { tail -5 "$WORK/big.log"; exit 1; }; t1=$(now)
ours_big=$(elapsed "$t0" "$t1")
t0=$(now); skopeo copy --src-tls-verify=false --dest-tls-verify=false "docker://$REG_SRC/bench/big:v1" "docker://$REG_DST2/bench/big:v1" >"$WORK/skopeo-big.log" 2>&1; t1=$(now)
skopeo_big=$(elapsed "$t0" "$t1")
digest=$(curl -fsS -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' "http://$REG_SRC/v2/bench/big/manifests/v1" | python3 -c 'import json,sys; m=json.load(sys.stdin); print(max(m["layers"], key=lambda l: l["size"])["digest"])')
t0=$(now)
loc=$(curl -fsS -X POST -D - -o /dev/null "http://$REG_DST3/v2/raw/big/blobs/uploads/" | tr -d '\r' | awk 'tolower($1)=="location:"{print $2}')
curl -fsS "http://$REG_SRC/v2/bench/big/blobs/$digest" | curl -fsS -X PUT -H 'Content-Type: application/octet-stream' -T - "$loc&digest=$digest" >/dev/null
t1=$(now); curl_big=$(elapsed "$t0" "$t1")

cold_req=$(jq_ "$WORK/small-cold.json" "sum(r['requests'].values())")
warm_req=$(jq_ "$WORK/small-warm.json" "sum(r['requests'].values())")
warm_blob=$(jq_ "$WORK/small-warm.json" "sum(r['blob_requests'].values())")
rss_small=$(jq_ "$WORK/small-cold.json" "r['peak_rss_bytes']//1048576")
rss_big=$(jq_ "$WORK/big.json.report" "r['peak_rss_bytes']//1048576")
failed=$(jq_ "$WORK/small-cold.json" "r['failed']")

cat <<REPORT
ecr-sync benchmark: $ntags small images in $SMALL_REPOS repositories, one ${BIG_MIB} MiB layer
                       ecr-sync    skopeo   skopeo/ecr-sync
small, cold (s)       $ours_small_cold     $skopeo_small_cold     $(ratio "$skopeo_small_cold" "$ours_small_cold")x
small, warm (s)       $ours_small_warm     $skopeo_small_warm     $(ratio "$skopeo_small_warm" "$ours_small_warm")x
big layer (s)         $ours_big     $skopeo_big     $(ratio "$skopeo_big" "$ours_big")x
raw curl GET|PUT of the big blob: ${curl_big}s; ecr-sync reaches $(python3 -c "print(f'{100*$curl_big/$ours_big:.0f}')")% of that rate
requests per tag: cold $(python3 -c "print(f'{$cold_req/$ntags:.2f}')"), warm $(python3 -c "print(f'{$warm_req/$ntags:.2f}')") ($warm_blob blob requests when warm)
peak RSS: small run ${rss_small} MiB, big layer ${rss_big} MiB; failed jobs: $failed
REPORT
