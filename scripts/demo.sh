#!/usr/bin/env bash
# Run the main job locally: start two registries on loopback, put sample images in one, and sync
# them into the other with `ecr-sync sync` — cold, then warm. Stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v docker-registry >/dev/null || { echo "needs docker-registry (apt-get install docker-registry)"; exit 2; }
cargo build --release -q -p ecr-sync-planner -p ecr-sync-testkit
source scripts/lib.sh
start_registry SRC; start_registry DST
echo "source registry $REG_SRC, destination registry $REG_DST"
target/release/ecr-sync-testkit seed --registry "http://$REG_SRC" --prefix demo --repos 3 --tags 5 --multi-arch
sync_config "$WORK/config.json" "$REG_SRC" "$REG_DST" demo/app0 demo/app1 demo/app2 demo/multiarch
echo "--- config ($WORK/config.json)"; cat "$WORK/config.json"
echo "--- dry run"
target/release/ecr-sync sync --config "$WORK/config.json" --dry-run
echo "--- sync (cold)"
target/release/ecr-sync sync --config "$WORK/config.json" --ledger "$WORK/ledger.db" --report "$WORK/report.json"
echo "--- sync again (warm: every tag is up to date, no blob moves)"
target/release/ecr-sync sync --config "$WORK/config.json" --ledger "$WORK/ledger.db"
echo "--- destination tags of demo/app0:"
curl -fsS "http://$REG_DST/v2/demo/app0/tags/list"; echo
