# Shared by demo.sh and bench.sh: start Debian's docker-registry on free loopback ports, remember
# the PIDs, and stop exactly those on exit.
source "$(dirname "${BASH_SOURCE[0]}")/registry-config.sh"
STARTED_PIDS=()
WORK=$(mktemp -d)
cleanup() {
  for pid in "${STARTED_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${STARTED_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_registry NAME -> sets REG_<NAME>=127.0.0.1:PORT
start_registry() {
  local name=$1 port dir
  port=$(free_port); dir="$WORK/$name"; mkdir -p "$dir/data"
  write_registry_config "$dir/config.yml" "$dir/data" "$port" ecr-sync-local
  docker-registry serve "$dir/config.yml" >"$dir/log" 2>&1 &
  STARTED_PIDS+=($!)
  for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
  printf -v "REG_$name" '%s' "127.0.0.1:$port"
}

# sync_config FILE SRC DST REPO... -> a config syncing SRC/REPO to DST for each REPO
sync_config() {
  local file=$1 src=$2 dst=$3; shift 3
  python3 - "$file" "$src" "$dst" "$@" <<'PY'
import json, sys
file, src, dst, repos = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
json.dump({"repos": [{"source": f"{src}/{r}"} for r in repos],
           "destination_registry": dst,
           "registries": {src: {"plain_http": True}, dst: {"plain_http": True}}},
          open(file, "w"), indent=2)
PY
}

now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2-$1:.2f}')"; }

# start_moto -> moto from $ECR_SYNC_VENV (default .venv), through testkit/moto_strict.py (as strict
# as AWS where moto is laxer), on a free port, MOTO_PID set, and the AWS environment (dummy
# credentials, its endpoint) exported for the benchmark's binaries.
start_moto() {
  local venv=${ECR_SYNC_VENV:-.venv} port
  [ -x "$venv/bin/moto_server" ] || { echo "moto is missing: run scripts/test.sh first (it creates $venv)"; exit 1; }
  port=$(free_port)
  "$venv/bin/python" "$(dirname "${BASH_SOURCE[0]}")/../testkit/moto_strict.py" -H 127.0.0.1 -p "$port" \
    >"$WORK/moto.log" 2>&1 &
  MOTO_PID=$!; STARTED_PIDS+=($MOTO_PID)
  for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$port/moto-api/" >/dev/null 2>&1 && break; sleep 0.2; done
  export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 \
    AWS_EC2_METADATA_DISABLED=true AWS_ENDPOINT_URL="http://127.0.0.1:$port"
}
