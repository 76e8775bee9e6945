#!/usr/bin/env bash
# infra/test/run.sh — every check of the Terraform module, in one entry point.
#
#   fmt → init + validate (module, examples, test root) → env-names (against
#   main.tf and the binaries' --help) → checkov → moto (127.0.0.1) → apply test
#   + checks → planner validates the applied config → fleet test (planner and
#   worker with the task definitions' environment, under the module's planner
#   and worker task roles with moto's IAM enforcement on, on the applied queue,
#   DLQ, table and config object, copying between two local registries)
#   → config-type test (plan of the seed's tfvars) → destroy
#
# Needs: terraform on PATH, python3, network to PyPI on first run; for the
# binary checks, the workspace built (planner, worker and testkit side by side)
# and docker-registry (Debian package docker-registry) on PATH.
# Environment:
#   ECR_SYNC_VENV         virtualenv for moto, checkov, boto3 (default infra/.venv)
#   ECR_SYNC_BIN  planner binary (default target/{debug,release}/ecr-sync);
#                         ecr-sync-worker and ecr-sync-testkit are taken from its folder
#   TF_TIMEOUT            seconds allowed per terraform apply/plan/destroy (default 900)
# Prints `infra: N passed, M failed` last; exits 1 if anything failed.

set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
INFRA=$(pwd)
REPO=$(cd .. && pwd)
VENV=${ECR_SYNC_VENV:-$INFRA/.venv}
TF_TIMEOUT=${TF_TIMEOUT:-900}
START=$(date +%s)

PASSED=0
FAILED=0
pass() { echo "PASS: $1"; PASSED=$((PASSED + 1)); }
fail() { echo "FAIL: $1"; FAILED=$((FAILED + 1)); }
note() { echo "---- $*"; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ecr-sync-infra.XXXXXX")
MOTO_PID=""
MOTO_IAM=off # moto's IAM enforcement (on only for the fleet test; see moto_iam)
TF_PID="" # a terraform apply/destroy running in the background
BIN_PID="" # a planner/worker run of the fleet test, in the background
REG_PIDS=() # the fleet test's docker-registry processes
APPLY_STATE="$WORK/apply.tfstate"
APPLIED=0
# `terraform init` writes .terraform.lock.hcl next to each root; remove the
# ones this run creates (lock files are not committed, see infra/.gitignore).
lock_files() { find "$INFRA" -name .terraform.lock.hcl -not -path '*/.venv/*' 2>/dev/null | sort; }
LOCKS_BEFORE=$(lock_files)

# check NAME CMD... — run CMD with output to a log; show the log's tail on
# failure. Returns CMD's success, so dependent checks can be chained with &&.
check() {
  local name=$1
  shift
  local log="$WORK/log.$((PASSED + FAILED))"
  if "$@" >"$log" 2>&1; then
    pass "$name"
  else
    fail "$name"
    sed 's/^/    /' "$log" | tail -40
    return 1
  fi
}

# fd 3/4: the script's own stdout/stderr, for the EXIT trap (which can fire
# while a check's output is redirected to its log).
exec 3>&1 4>&2

# Stop exactly the registries the fleet test started.
stop_registries() {
  local pid
  for pid in "${REG_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${REG_PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  REG_PIDS=()
}

finish() {
  local rc=$?
  exec 1>&3 2>&4
  if [ -n "$TF_PID" ] && kill -0 "$TF_PID" 2>/dev/null; then
    note "cleanup: stopping terraform (pid $TF_PID)"
    stop_pid "$TF_PID"
  fi
  if [ -n "$BIN_PID" ] && kill -0 "$BIN_PID" 2>/dev/null; then
    note "cleanup: stopping the fleet test's binary (pid $BIN_PID)"
    stop_pid "$BIN_PID"
  fi
  stop_registries
  [ "$MOTO_IAM" = on ] && moto_iam off
  if [ "$APPLIED" = 1 ]; then
    note "cleanup: destroying the apply test after an early exit"
    (cd "$INFRA/test/apply" && TF_DATA_DIR="$WORK/tf/apply" timeout "$TF_TIMEOUT" \
      terraform destroy -auto-approve -input=false -no-color -state="$APPLY_STATE" \
      -var "moto_endpoint=$MOTO_URL" >"$WORK/destroy-cleanup.log" 2>&1) ||
      { echo "cleanup destroy failed (moto is stopped anyway):"; tail -20 "$WORK/destroy-cleanup.log"; }
  fi
  if [ -n "$MOTO_PID" ] && kill -0 "$MOTO_PID" 2>/dev/null; then
    kill "$MOTO_PID" 2>/dev/null
    wait "$MOTO_PID" 2>/dev/null
  fi
  comm -13 <(echo "$LOCKS_BEFORE") <(lock_files) | while read -r f; do rm -f "$f"; done
  rm -rf "$WORK"
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

summary() {
  echo "infra: wall time $(($(date +%s) - START)) s"
  echo "infra: $PASSED passed, $FAILED failed"
  [ "$FAILED" = 0 ]
}

################################################################################
# Tools
################################################################################

if ! command -v terraform >/dev/null 2>&1; then
  echo "terraform is not on PATH: install Terraform >= 1.3 (this machine image ships 1.11)" >&2
  fail "terraform present"
  summary
  exit 1
fi

if [ ! -x "$VENV/bin/moto_server" ] || [ ! -x "$VENV/bin/checkov" ]; then
  note "installing moto[server], checkov, boto3 into $VENV"
  [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV" || { echo "python3 -m venv failed" >&2; exit 1; }
  "$VENV/bin/pip" install --quiet -r "$INFRA/test/requirements.txt" || { echo "pip install failed" >&2; exit 1; }
fi
PY="$VENV/bin/python"

# The binaries: the planner, and the worker and testkit built next to it.
PLANNER=${ECR_SYNC_BIN:-}
if [ -z "$PLANNER" ]; then
  for candidate in "$REPO/target/debug/ecr-sync" "$REPO/target/release/ecr-sync"; do
    [ -x "$candidate" ] && PLANNER=$candidate && break
  done
fi
if [ -n "${ECR_SYNC_BIN:-}" ] && [ ! -x "$PLANNER" ]; then
  fail "ECR_SYNC_BIN=$PLANNER is not an executable file"
  PLANNER=""
fi
WORKER=""
TESTKIT=""
if [ -n "$PLANNER" ]; then
  WORKER=$(dirname "$PLANNER")/ecr-sync-worker
  TESTKIT=$(dirname "$PLANNER")/ecr-sync-testkit
  note "binaries: $PLANNER, $WORKER, $TESTKIT"
  for bin in "$WORKER" "$TESTKIT"; do
    [ -x "$bin" ] || fail "$(basename "$bin") is built next to the planner (no $bin; cargo build --workspace)"
  done
  [ -x "$WORKER" ] || WORKER=""
  [ -x "$TESTKIT" ] || TESTKIT=""
fi

# Offline provider: the filesystem mirror the machine image ships.
PROVIDER=$(find / \( -path /proc -o -path /sys \) -prune -o \
  -name 'terraform-provider-aws_*' -path '*registry.terraform.io*' -print 2>/dev/null | head -1)
if [ -z "$PROVIDER" ]; then
  echo "no terraform-provider-aws under a registry.terraform.io mirror folder" >&2
  fail "AWS provider mirror found"
  summary
  exit 1
fi
MIRROR=${PROVIDER%%/registry.terraform.io/*}
note "provider mirror: $MIRROR"
cat >"$WORK/terraform.rc" <<EOF
provider_installation {
  filesystem_mirror {
    path    = "$MIRROR"
    include = ["registry.terraform.io/hashicorp/*"]
  }
  direct {
    exclude = ["registry.terraform.io/hashicorp/*"]
  }
}
EOF
export TF_CLI_CONFIG_FILE="$WORK/terraform.rc"
export TF_IN_AUTOMATION=1
export CHECKPOINT_DISABLE=1
note "$(terraform version | head -1)"

# Each root's .terraform lives in $WORK, so runs never see stale plugins or state.
tf() { # tf DIR NAME ARGS...
  local dir=$1 name=$2
  shift 2
  (cd "$INFRA/$dir" && TF_DATA_DIR="$WORK/tf/$name" terraform "$@")
}

################################################################################
# Static checks
################################################################################

check "terraform fmt -check -recursive" terraform fmt -check -recursive -diff "$INFRA"

ROOTS=(". module" "examples/basic-deployment basic" "examples/private-vpc private" "examples/source-account source" "test/apply apply")
for root in "${ROOTS[@]}"; do
  read -r dir name <<<"$root"
  check "terraform init ($dir)" tf "$dir" "$name" init -backend=false -input=false -no-color
  check "terraform validate ($dir)" tf "$dir" "$name" validate -no-color
done

env_names_match() {
  # The names in main.tf's `local.env` block, in order, against env-names.txt.
  diff <(sed -n '/^  env = {/,/^  }/p' main.tf | grep -oE '"ECR_SYNC_[A-Z_]+"' | tr -d '"') test/env-names.txt
}
check "test/env-names.txt lists exactly main.tf's local.env names" env_names_match

# help_env_names ARGS... — the ECR_SYNC_* names clap lists as `[env: NAME=]` in
# the long help of the binary and subcommand ARGS (a clean environment, so no
# value is shown after the `=`).
help_env_names() {
  env -i PATH="$PATH" "$@" --help | grep -oE '\[env: ECR_SYNC_[A-Z0-9_]+=' | sed 's/^\[env: //; s/=$//' | sort -u
}
# Env names the binaries read that the module deliberately does not set
# (none today; list one here, with the reason, before the binaries gain it).
NOT_SET_BY_MODULE=()
binaries_read_env_names() {
  local plan_names worker_names both bad=0 name
  plan_names=$(help_env_names "$PLANNER" plan) || return 1
  worker_names=$(help_env_names "$WORKER") || return 1
  both=$(printf '%s\n%s\n' "$plan_names" "$worker_names" | sort -u)
  echo "plan --help reads: $(tr '\n' ' ' <<<"$plan_names")"
  echo "worker --help reads: $(tr '\n' ' ' <<<"$worker_names")"
  while read -r name; do
    [ -n "$name" ] || continue
    if [ "$name" = ECR_SYNC_LOG_FORMAT ]; then # --log-format, in both binaries
      if ! grep -qx "$name" <<<"$plan_names" || ! grep -qx "$name" <<<"$worker_names"; then
        echo "$name: not read by both plan and the worker"
        bad=1
      fi
    elif ! grep -qx "$name" <<<"$both"; then
      echo "$name: in env-names.txt but read by neither plan nor the worker"
      bad=1
    fi
  done <test/env-names.txt
  while read -r name; do
    [ -n "$name" ] || continue
    grep -qx "$name" test/env-names.txt && continue
    printf '%s\n' "${NOT_SET_BY_MODULE[@]}" | grep -qx "$name" && continue
    echo "$name: read by the binaries but not set by the module (not in env-names.txt)"
    bad=1
  done <<<"$both"
  [ "$bad" = 0 ]
}
if [ -n "$PLANNER" ] && [ -n "$WORKER" ]; then
  check "test/env-names.txt names are exactly the env the binaries read (plan --help, worker --help)" \
    binaries_read_env_names
else
  echo "SKIPPED: env names against the binaries' --help (planner or worker not built)"
fi
check "README.md Inputs/Outputs tables match variables.tf and outputs.tf" "$PY" "$INFRA/test/readme_tables.py"

checkov_clean() {
  "$VENV/bin/checkov" -d "$INFRA" --skip-path .venv --skip-path .terraform --skip-download --quiet --compact \
    --framework terraform dockerfile secrets >"$WORK/checkov.txt" 2>"$WORK/checkov.err"
  local rc=$?
  grep -E 'scan results|Passed checks' "$WORK/checkov.txt"
  [ $rc = 0 ] || { cat "$WORK/checkov.txt"; return 1; }
  ! grep -qE 'Failed checks: [1-9]' "$WORK/checkov.txt"
}
check "checkov: no failed checks (skips are inline and justified)" checkov_clean

################################################################################
# moto on 127.0.0.1
################################################################################

PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# moto_server, with DynamoDB and GetQueueUrl calls authorized against their table or queue
# and IAM denials logged, conditional writes atomic (see testkit/moto_strict.py); enforcement
# itself starts off.
"$PY" "$INFRA/../testkit/moto_strict.py" -H 127.0.0.1 -p "$PORT" >"$WORK/moto.log" 2>&1 &
MOTO_PID=$!
MOTO_URL="http://127.0.0.1:$PORT"
note "moto: pid $MOTO_PID at $MOTO_URL"

# Only this script's children see these: dummy credentials and moto.
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_DEFAULT_PROFILE
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
export AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
export AWS_ENDPOINT_URL="$MOTO_URL"
unset AWS_CA_BUNDLE

moto_up() {
  for _ in $(seq 1 60); do
    "$PY" -c "import urllib.request; urllib.request.urlopen('$MOTO_URL/moto-api/', timeout=2)" 2>/dev/null && return 0
    kill -0 "$MOTO_PID" 2>/dev/null || { cat "$WORK/moto.log"; return 1; }
    sleep 0.5
  done
  return 1
}
check "moto server answers" moto_up

# moto_iam on|off — moto's IAM enforcement: every later request is authenticated and
# authorized by the caller's IAM policies (`INITIAL_NO_AUTH_ACTION_COUNT` 0), or none is
# (inf, moto's default: terraform and the checks use dummy keys no IAM user owns). Set at
# run time: the env var at start counts every request, terraform's included, before it bites.
moto_iam() {
  local count=inf
  [ "$1" = on ] && count=0
  # text/plain: moto reads the count from the raw body, which a form content type empties.
  curl -fsS -X POST -H 'Content-Type: text/plain' --data "$count" "$MOTO_URL/moto-api/reset-auth" >/dev/null &&
    MOTO_IAM=$1
}

################################################################################
# Apply test
################################################################################

TFVARS=(-var "moto_endpoint=$MOTO_URL")

# tf_bounded LOG DIR NAME ARGS... — terraform in the background (so a signal
# to this script is handled within seconds), stopped after TF_TIMEOUT.
tf_bounded() {
  local log=$1 dir=$2 name=$3 waited=0 rc
  shift 3
  # exec: TF_PID is terraform itself, so signals reach it.
  (cd "$INFRA/$dir" && TF_DATA_DIR="$WORK/tf/$name" exec terraform "$@") >"$log" 2>&1 &
  TF_PID=$!
  while kill -0 "$TF_PID" 2>/dev/null; do
    if [ "$waited" -ge "$TF_TIMEOUT" ]; then
      echo "timed out after ${TF_TIMEOUT}s"
      stop_pid "$TF_PID"
      TF_PID=""
      return 1
    fi
    sleep 2
    waited=$((waited + 2))
  done
  wait "$TF_PID"
  rc=$?
  TF_PID=""
  return $rc
}

# stop_pid PID — ask terraform to stop (it then stops its provider), kill if it does not.
stop_pid() {
  local pid=$1
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 1 30); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 1
  done
  kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
}

apply_test() {
  APPLIED=1
  # Bounded: moto creates each SQS queue in ~25 s; a hang fails the check.
  if ! tf_bounded "$WORK/apply.log" test/apply apply apply -auto-approve -input=false -no-color \
    -state="$APPLY_STATE" "${TFVARS[@]}"; then
    grep -E 'Error|Still creating' "$WORK/apply.log" | tail -20
    return 1
  fi
  grep -E 'Apply complete' "$WORK/apply.log"
}

check "terraform apply of the module on moto (autoscaling off)" apply_test

if tf test/apply apply output -no-color -json -state="$APPLY_STATE" >"$WORK/outputs.json" 2>"$WORK/outputs.err" &&
  grep -q '"module"' "$WORK/outputs.json"; then
  pass "terraform output after apply"
  "$PY" "$INFRA/test/check_apply.py" "$WORK/outputs.json" "$INFRA/test/apply/expected-config.json" \
    "$INFRA/test/env-names.txt" "$WORK/applied-config.json" >"$WORK/checks.txt" 2>&1
  cat "$WORK/checks.txt"
  PASSED=$((PASSED + $(grep -c '^PASS: ' "$WORK/checks.txt")))
  FAILED=$((FAILED + $(grep -c '^FAIL: ' "$WORK/checks.txt")))
  grep -qE '^(PASS|FAIL): ' "$WORK/checks.txt" || fail "check_apply.py ran (see above)"
else
  fail "terraform output after apply"
  cat "$WORK/outputs.err"
fi

################################################################################
# The planner's config loader accepts what the module writes
################################################################################

planner_accepts() { # planner_accepts FILE
  [ -s "$1" ] || { echo "no config file $1"; return 1; }
  "$PLANNER" validate --config "$1"
}
planner_rejects() { # an invalid config must exit 2, so a stub binary cannot pass
  printf '{"mode":"sideways","repos":[{"source":"host/a","tags":["[unclosed"]}],"unknown_field":1}\n' >"$WORK/invalid.json"
  "$PLANNER" validate --config "$WORK/invalid.json"
  local rc=$?
  echo "exit code $rc (want 2)"
  [ "$rc" = 2 ]
}

if [ -n "$PLANNER" ]; then
  note "planner: $PLANNER"
  check "planner validate accepts the config the apply wrote to S3" planner_accepts "$WORK/applied-config.json"
  check "planner validate rejects an invalid config with exit 2" planner_rejects
else
  echo "SKIPPED: planner binary not built (looked for ECR_SYNC_BIN, target/debug and target/release)"
fi

################################################################################
# Fleet test: the real planner and worker against what the apply created —
# the queue, DLQ, ledger table and config object (ECS and EventBridge are not
# run here) — with the environment of the registered task definitions, copying
# between two docker-registry processes on 127.0.0.1.
################################################################################

# Like scripts/lib.sh's start_registry (the same config file), with this script's PID
# bookkeeping.
source "$REPO/scripts/registry-config.sh"
# start_registry NAME — sets REG_<NAME>=127.0.0.1:PORT once /v2/ answers.
start_registry() {
  local name=$1 port dir pid
  port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  dir="$WORK/registry-$name"
  mkdir -p "$dir/data"
  write_registry_config "$dir/config.yml" "$dir/data" "$port" ecr-sync-infra-test
  docker-registry serve "$dir/config.yml" >"$dir/log" 2>&1 3>&- 4>&- &
  pid=$!
  REG_PIDS+=("$pid")
  echo "registry $name: pid $pid at 127.0.0.1:$port"
  printf -v "REG_$name" '%s' "127.0.0.1:$port"
  for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  cat "$dir/log"
  return 1
}

# run_bounded LIMIT OUT ERR CMD... — CMD in the background (so a signal to this
# script is handled within seconds) with stdout to OUT and stderr to ERR,
# stopped after LIMIT seconds; returns CMD's exit code.
run_bounded() {
  local limit=$1 out=$2 err=$3 waited=0 rc
  shift 3
  "$@" >"$out" 2>"$err" 3>&- 4>&- &
  BIN_PID=$!
  while kill -0 "$BIN_PID" 2>/dev/null; do
    if [ "$waited" -ge $((limit * 10)) ]; then
      echo "timed out after ${limit}s: $*"
      stop_pid "$BIN_PID"
      BIN_PID=""
      return 124
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  wait "$BIN_PID"
  rc=$?
  BIN_PID=""
  return $rc
}

# task_cmd planner|worker — sets TASK_CMD=(env -i NAME=VALUE...): the binaries
# see only their task definition's environment plus what ECS and the task role
# would give them, a region and credentials (here: moto's endpoint and a session
# of the module's planner or worker task role, see fleet_iam). A simple
# command, so `"${TASK_CMD[@]}" BIN &` leaves $! = the binary.
MOTO_ENV=(AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true "AWS_ENDPOINT_URL=$MOTO_URL")
TASK_CMD=()
task_cmd() {
  local vars creds
  mapfile -t vars <"$WORK/task-env.$1"
  mapfile -t creds <"$WORK/creds.$1"
  TASK_CMD=(env -i "PATH=$PATH" "HOME=$WORK/home" "${MOTO_ENV[@]}" "${creds[@]}" "${vars[@]}")
}

# The binaries run under the module's roles with moto enforcing IAM: a permission
# missing from infra/iam.tf is refused as it would be in AWS. moto checks a role
# session's calls against the role's policies (actions, and resources as
# moto_strict.py names them; not conditions). The sessions are made before
# enforcement starts: the roles trust only ecs-tasks.amazonaws.com, which no
# caller here is (and moto answers AssumeRole on a Service-principal trust policy
# with a 500 when it checks it). This script's own calls (config upload, queue
# depths) use an IAM user allowed everything.
fleet_iam() {
  local which arn
  "$PY" "$INFRA/test/fleet.py" harness-user ecr-sync-infra-test >"$WORK/creds.harness" || return 1
  for which in planner worker; do
    arn=$(json_get "$WORK/outputs.json" "j['module']['value']['${which}_task_role_arn']") || return 1
    "$PY" "$INFRA/test/fleet.py" assume "$arn" "$which-task" >"$WORK/creds.$which" || return 1
    echo "$which: session $which-task of $arn"
  done
  moto_iam on || return 1
  local line
  while read -r line; do export "${line?}"; done <"$WORK/creds.harness"
  echo "moto IAM enforcement on; this script's calls as IAM user ecr-sync-infra-test"
}

# moto_strict.py logs each call moto's IAM check refuses. DENIALS_MARK counts those
# before the binaries run: every later one is a task role lacking a permission
# (even one a binary tolerated would fail in AWS).
DENIALS_MARK=0
denials() { grep '^moto IAM denied: ' "$WORK/moto.log"; }
denials_since_mark() { denials | tail -n +$((DENIALS_MARK + 1)); }
# show_denials — after a failed step: which permissions the roles lacked.
show_denials() {
  local found
  found=$(denials_since_mark)
  [ -n "$found" ] || return 0
  echo "moto refused these calls of the task roles (infra/iam.tf lacks the permission):"
  sed 's/^moto IAM denied: /  /' <<<"$found"
}

fleet_iam_enforced() {
  "$PY" "$INFRA/test/fleet.py" expect-denied "$WORK/outputs.json" "$WORK/creds.planner" "$WORK/creds.worker"
  local rc=$?
  DENIALS_MARK=$(denials | wc -l)
  return $rc
}

fleet_no_denials() {
  [ -z "$(denials_since_mark)" ] || { show_denials; return 1; }
}

json_get() { # json_get FILE PYTHON-EXPR-ON-j
  "$PY" -c 'import json, sys; j = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}

fleet_task_env() {
  local which
  for which in planner worker; do
    "$PY" "$INFRA/test/fleet.py" task-env "$WORK/outputs.json" "$which" >"$WORK/task-env.$which" || return 1
    echo "$which task definition:"
    sed 's/^/  /' "$WORK/task-env.$which"
  done
  [ -s "$WORK/task-env.planner" ] && [ -s "$WORK/task-env.worker" ]
}

# Each container reads every name its task definition sets, and the module's
# `environment` output is the worker's.
fleet_env_names_read() {
  local bad=0 which names name
  for which in planner worker; do
    if [ "$which" = planner ]; then
      names=$(help_env_names "$PLANNER" plan) || return 1 # the planner task runs `ecr-sync plan`
    else
      names=$(help_env_names "$WORKER") || return 1
    fi
    while IFS='=' read -r name _; do
      grep -qx "$name" <<<"$names" || { echo "$which task sets $name, which its binary does not read"; bad=1; }
    done <"$WORK/task-env.$which"
  done
  diff <(json_get "$WORK/outputs.json" '"\n".join(f"{k}={v}" for k, v in sorted(j["module"]["value"]["environment"].items()))') \
    <(sort "$WORK/task-env.worker") || { echo "output environment (<) differs from the worker task definition (>)"; bad=1; }
  diff <(grep -Ev '^ECR_SYNC_(DRAIN|JOB_DEADLINE)_SECONDS=' "$WORK/task-env.worker" | sort) <(sort "$WORK/task-env.planner") ||
    { echo "planner env differs from the worker's minus its worker-only settings"; bad=1; }
  # The push-event function runs the worker binary too.
  names=$(help_env_names "$WORKER") || return 1
  for name in $(json_get "$WORK/outputs.json" '" ".join(j["module"]["value"]["event_function_environment"])'); do
    grep -qx "$name" <<<"$names" || { echo "the push-event function sets $name, which the worker does not read"; bad=1; }
  done
  [ "$bad" = 0 ]
}

FLEET_REPOS=(fleet/app0 fleet/app1 fleet/multiarch)
FLEET_N=0
fleet_seed() {
  run_bounded 120 "$WORK/seed.out" "$WORK/seed.err" \
    "$TESTKIT" seed --registry "http://$REG_SRC" --prefix fleet --repos 2 --tags 3 --multi-arch ||
    { cat "$WORK/seed.out" "$WORK/seed.err"; return 1; }
  cat "$WORK/seed.out"
  "$PY" "$INFRA/test/fleet.py" tags "$REG_SRC" "${FLEET_REPOS[@]}" >"$WORK/seeded-tags" || return 1
  FLEET_N=$(wc -l <"$WORK/seeded-tags")
  echo "$FLEET_N tags: $(tr '\n' ' ' <"$WORK/seeded-tags")"
  [ "$FLEET_N" = 7 ] # 2 repositories × 3 tags + the multi-arch index
}

fleet_config() {
  "$PY" "$INFRA/test/fleet.py" put-config "$WORK/outputs.json" "$REG_SRC" "$REG_DST" "${FLEET_REPOS[@]}" || return 1
  # The planner reads it back through ECR_SYNC_CONFIG, as the tasks do.
  task_cmd planner
  "${TASK_CMD[@]}" "$PLANNER" validate || { show_denials; return 1; }
}

RUN_ID=""
fleet_plan() {
  task_cmd planner
  run_bounded 120 "$WORK/plan.json" "$WORK/plan.err" "${TASK_CMD[@]}" "$PLANNER" plan --json ||
    { cat "$WORK/plan.json"; tail -20 "$WORK/plan.err"; show_denials; return 1; }
  cat "$WORK/plan.json"
  RUN_ID=$(json_get "$WORK/plan.json" 'j["run_id"]') || return 1
  local planned
  planned=$(json_get "$WORK/plan.json" 'j["planned"]') || return 1
  echo "planned $planned (want $FLEET_N)"
  [ "$planned" = "$FLEET_N" ] && [ "$(json_get "$WORK/plan.json" 'j["failed_repos"]')" = 0 ]
}

fleet_worker() {
  task_cmd worker
  run_bounded 180 "$WORK/worker.out" "$WORK/worker.err" \
    "${TASK_CMD[@]}" "$WORKER" --exit-when-idle 3 --wait-seconds 1
  local rc=$?
  echo "worker exit code $rc (want 0)"
  [ "$rc" = 0 ] || { tail -30 "$WORK/worker.err"; show_denials; return 1; }
}

fleet_digests() {
  local refs
  mapfile -t refs <"$WORK/seeded-tags"
  "$PY" "$INFRA/test/fleet.py" digests "$REG_SRC" "${refs[@]}" >"$WORK/digests.src" || return 1
  "$PY" "$INFRA/test/fleet.py" digests "$REG_DST" "${refs[@]}" >"$WORK/digests.dst" || return 1
  cat "$WORK/digests.dst"
  ! grep -q ' -$' "$WORK/digests.src" || { echo "source digest missing"; return 1; }
  diff "$WORK/digests.src" "$WORK/digests.dst"
}

fleet_status() {
  task_cmd planner
  "${TASK_CMD[@]}" "$PLANNER" status "$RUN_ID" --json >"$WORK/status.json" ||
    { cat "$WORK/status.json"; show_denials; return 1; }
  json_get "$WORK/status.json" '{k: j[k] for k in ("states", "bytes", "failed")}'
  [ "$(json_get "$WORK/status.json" 'j["states"].get("succeeded")')" = "$FLEET_N" ] &&
    [ "$(json_get "$WORK/status.json" 'sum(j["states"].values())')" = "$FLEET_N" ] &&
    [ "$(json_get "$WORK/status.json" 'len(j["failed"])')" = 0 ]
}

fleet_queues_empty() {
  "$PY" "$INFRA/test/fleet.py" queue-depths "$WORK/outputs.json" | tee "$WORK/depths" || return 1
  ! grep -qv ' 0$' "$WORK/depths"
}

fleet_plan_again() {
  task_cmd planner
  run_bounded 120 "$WORK/plan2.json" "$WORK/plan2.err" "${TASK_CMD[@]}" "$PLANNER" plan --json ||
    { cat "$WORK/plan2.json"; tail -20 "$WORK/plan2.err"; show_denials; return 1; }
  cat "$WORK/plan2.json"
  [ "$(json_get "$WORK/plan2.json" 'j["planned"]')" = 0 ] &&
    [ "$(json_get "$WORK/plan2.json" 'j["up_to_date"]')" = "$FLEET_N" ]
}

if [ -z "$PLANNER" ] || [ -z "$WORKER" ] || [ -z "$TESTKIT" ]; then
  echo "SKIPPED: fleet test (planner, worker or testkit not built)"
elif ! command -v docker-registry >/dev/null 2>&1; then
  fail "fleet test: docker-registry on PATH (apt-get install docker-registry)"
elif [ ! -s "$WORK/outputs.json" ] || ! grep -q '"module"' "$WORK/outputs.json"; then
  fail "fleet test: needs the apply's outputs"
else
  mkdir -p "$WORK/home"
  check "fleet: the registered task definitions' environment" fleet_task_env
  check "fleet: each task definition and the push-event function set only env their binary reads; output environment = worker task's" \
    fleet_env_names_read
  if check "fleet: source docker-registry on 127.0.0.1" start_registry SRC &&
    check "fleet: destination docker-registry on 127.0.0.1" start_registry DST &&
    check "fleet: testkit seeds 7 tags into the source registry" fleet_seed &&
    check "fleet: sessions of the module's planner and worker task roles; moto IAM enforcement on" fleet_iam &&
    check "fleet: moto refuses dummy keys, planner receiving jobs or reading another table, worker writing the config" \
      fleet_iam_enforced &&
    check "fleet: config for the local registries at config_s3_uri; planner (task role) validates it from S3" fleet_config &&
    check "fleet: planner \`plan\` (planner task env and role) queues one job per seeded tag" fleet_plan; then
    check "fleet: worker (worker task env and role) exits 0 once the queue is idle" fleet_worker
    check "fleet: every seeded tag is in the destination with the source digest" fleet_digests
    check "fleet: planner \`status RUN\` reports every job succeeded in the ledger table" fleet_status
    check "fleet: jobs queue and DLQ are empty" fleet_queues_empty
    check "fleet: planning again finds every tag up to date" fleet_plan_again
    check "fleet: moto's IAM check refused no call of the planner or worker task roles" fleet_no_denials
  fi
  stop_registries
  # Back to no enforcement and the dummy keys for the terraform runs below.
  if [ "$MOTO_IAM" = on ]; then
    moto_iam off || fail "moto IAM enforcement off again"
  fi
  export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
fi

################################################################################
# event_worker: an image outside ECR fails the plan of the Lambda path; then
# "fargate" applied over it routes push events to the jobs queue
################################################################################

lambda_refuses_foreign_image() {
  ! tf_bounded "$WORK/foreign-image.log" test/apply apply plan -input=false -no-color -state="$APPLY_STATE" \
    "${TFVARS[@]}" -var task_image_uri=ghcr.io/example/ecr-sync || return 1
  # Terraform wraps long messages: compare with the lines joined.
  tr -s ' \n│' ' ' <"$WORK/foreign-image.log" | grep -q 'needs it in ECR in this region' ||
    { tail -20 "$WORK/foreign-image.log"; return 1; }
}
check "event_worker = \"lambda\" with an image outside ECR fails the plan, naming event_worker" \
  lambda_refuses_foreign_image

fargate_events_apply() {
  tf_bounded "$WORK/fargate.log" test/apply apply apply -auto-approve -input=false -no-color \
    -state="$APPLY_STATE" "${TFVARS[@]}" -var event_worker=fargate ||
    { grep -E 'Error' -A5 "$WORK/fargate.log" | tail -20; return 1; }
  "$PY" - "$WORK/outputs.json" <<'PY'
import json, os, sys
import boto3
out = json.load(open(sys.argv[1]))["module"]["value"]
def client(service):
    return boto3.client(service, endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")
problems = []
ev = client("events")
rule = out["ecr_push_rule_arn"].rsplit("/", 1)[1]
targets = [t["Arn"] for t in ev.list_targets_by_rule(Rule=rule)["Targets"]]
if targets != [out["jobs_queue_arn"]]:
    problems.append(f"rule targets {targets}")
policy = json.loads(client("sqs").get_queue_attributes(QueueUrl=out["jobs_queue_url"], AttributeNames=["Policy"])["Attributes"]["Policy"])
senders = [st["Condition"]["ArnEquals"]["aws:SourceArn"] for st in policy["Statement"] if st.get("Principal") == {"Service": "events.amazonaws.com"}]
if senders != [out["ecr_push_rule_arn"]]:
    problems.append(f"jobs queue senders {senders}")
functions = [f["FunctionName"] for f in client("lambda").list_functions()["Functions"]]
if functions:
    problems.append(f"functions left: {functions}")
queues = client("sqs").list_queues().get("QueueUrls", [])
if any(q.endswith("-events") for q in queues):
    problems.append(f"events queue left: {queues}")
print("\n".join(problems) or "fargate: rule -> jobs queue, which lets only the rule send; no function, no events queue")
sys.exit(1 if problems else 0)
PY
}
check "event_worker = \"fargate\" applied over \"lambda\": push rule targets the jobs queue, which lets it send; function and events queue gone" \
  fargate_events_apply

################################################################################
# Config type: the seed's example tfvars pass the module's `config` type
# (a plan of examples/basic-deployment against moto, from a copy of infra/)
################################################################################

COPY="$WORK/infra-copy"
mkdir -p "$COPY"
tar -C "$INFRA" --exclude=./.venv --exclude='*.tfstate*' --exclude=.terraform -cf - . | tar -C "$COPY" -xf -
cat >"$COPY/examples/basic-deployment/moto_override.tf" <<EOF
provider "aws" {
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  s3_use_path_style           = true
  endpoints {
    dynamodb = "$MOTO_URL"
    ec2      = "$MOTO_URL"
    ecs      = "$MOTO_URL"
    iam      = "$MOTO_URL"
    kms      = "$MOTO_URL"
    s3       = "$MOTO_URL"
    sqs      = "$MOTO_URL"
    sts      = "$MOTO_URL"
  }
}
EOF

plan_example() { # plan_example NAME [extra terraform args]
  local name=$1
  shift
  (cd "$COPY/examples/basic-deployment" &&
    TF_DATA_DIR="$WORK/tf/basic-copy" terraform init -backend=false -input=false -no-color >/dev/null &&
    TF_DATA_DIR="$WORK/tf/basic-copy" timeout "$TF_TIMEOUT" terraform plan -input=false -no-color \
      -out="$WORK/$name.tfplan" "$@" &&
    TF_DATA_DIR="$WORK/tf/basic-copy" terraform show -json "$WORK/$name.tfplan" >"$WORK/$name.plan.json" &&
    "$PY" -c 'import json,sys; p=json.load(open(sys.argv[1])); open(sys.argv[2],"w").write(p["planned_values"]["outputs"]["config_json"]["value"])' \
      "$WORK/$name.plan.json" "$WORK/$name.config.json") >"$WORK/$name.plan.log" 2>&1 ||
    { tail -30 "$WORK/$name.plan.log"; return 1; }
}

check "config type accepts examples/basic-deployment/example.auto.tfvars (terraform plan)" plan_example seed-example
check "config type accepts the seed README's larger config (terraform plan)" \
  plan_example seed-readme -var-file="$INFRA/test/fixtures/seed-readme-config.tfvars"

rejects_bad_mode() {
  ! (cd "$COPY/examples/basic-deployment" && TF_DATA_DIR="$WORK/tf/basic-copy" timeout "$TF_TIMEOUT" \
    terraform plan -input=false -no-color -var 'config={mode="sideways"}' >"$WORK/bad-mode.log" 2>&1) &&
    grep -q 'config.mode must be' "$WORK/bad-mode.log"
}
check "config validation rejects mode = \"sideways\"" rejects_bad_mode

if [ -n "$PLANNER" ]; then
  check "planner validate accepts the seed example's JSON" planner_accepts "$WORK/seed-example.config.json"
  check "planner validate accepts the seed README config's JSON" planner_accepts "$WORK/seed-readme.config.json"
fi

################################################################################
# Destroy, then stop moto (the EXIT trap stops moto in every case)
################################################################################

destroy_test() {
  tf_bounded "$WORK/destroy.log" test/apply apply destroy -auto-approve -input=false -no-color \
    -state="$APPLY_STATE" "${TFVARS[@]}" || { grep -E 'Error' "$WORK/destroy.log" | tail -20; return 1; }
  APPLIED=0
  grep -E 'Destroy complete' "$WORK/destroy.log"
}
check "terraform destroy" destroy_test

summary
