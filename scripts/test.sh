#!/usr/bin/env bash
# The test command: installs what the tests need on a fresh Debian machine (apt packages, moto in
# a virtualenv), builds everything, and runs the whole suite. Each test starts its own registries
# and moto server on free 127.0.0.1 ports and stops exactly those when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pair in docker-registry:docker-registry skopeo:skopeo htpasswd:apache2-utils openssl:openssl python3:python3-venv; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair##*:}")
done
python3 -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
if ((${#need[@]})); then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  echo "installing: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

export ECR_SYNC_VENV="${ECR_SYNC_VENV:-$PWD/.venv}"
if [ ! -x "$ECR_SYNC_VENV/bin/moto_server" ]; then
  echo "creating $ECR_SYNC_VENV with moto[server]"
  python3 -m venv "$ECR_SYNC_VENV"
  "$ECR_SYNC_VENV/bin/pip" install -q --disable-pip-version-check 'moto[server]>=5.1,<6'
fi

# A clean build gains nothing from incremental state, which would take gigabytes of disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
cargo build --workspace --all-targets
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace 2>&1 | tee "$log"

export ECR_SYNC_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/ecr-sync"
if [ -x infra/test/run.sh ]; then
  infra/test/run.sh 2>&1 | tee -a "$log"
fi

# One closing line for the whole suite (cargo's own last line is the doc-test run).
awk '/^test result:/ { p += $4; f += $6 } /^infra: [0-9]+ passed/ { p += $2; f += $4 }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
