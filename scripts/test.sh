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

cargo build --workspace --all-targets
cargo test --workspace

if [ -x infra/test/run.sh ]; then
  infra/test/run.sh
fi
