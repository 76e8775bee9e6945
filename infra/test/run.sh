#!/usr/bin/env bash
# infra/test/run.sh — every check of the Terraform module, in one entry point.
#
#   fmt → init + validate (module, examples, test root) → env-names → checkov
#   → moto (127.0.0.1) → apply test + checks → planner validates the
#   applied config → config-type test (plan of the seed's tfvars) → destroy
#
# Needs: terraform on PATH, python3, network to PyPI on first run.
# Environment:
#   ECR_SYNC_VENV         virtualenv for moto, checkov, boto3 (default infra/.venv)
#   ECR_SYNC_PLANNER_BIN  planner binary (default target/{debug,release}/ecr-sync-planner)
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
TF_PID="" # a terraform apply/destroy running in the background
APPLY_STATE="$WORK/apply.tfstate"
APPLIED=0
# `terraform init` writes .terraform.lock.hcl next to each root; remove the
# ones this run creates (lock files are not committed, see infra/.gitignore).
lock_files() { find "$INFRA" -name .terraform.lock.hcl -not -path '*/.venv/*' 2>/dev/null | sort; }
LOCKS_BEFORE=$(lock_files)

# check NAME CMD... — run CMD with output to a log; show the log's tail on failure.
check() {
  local name=$1
  shift
  local log="$WORK/log.$((PASSED + FAILED))"
  if "$@" >"$log" 2>&1; then
    pass "$name"
  else
    fail "$name"
    sed 's/^/    /' "$log" | tail -40
  fi
}

# fd 3/4: the script's own stdout/stderr, for the EXIT trap (which can fire
# while a check's output is redirected to its log).
exec 3>&1 4>&2

finish() {
  local rc=$?
  exec 1>&3 2>&4
  if [ -n "$TF_PID" ] && kill -0 "$TF_PID" 2>/dev/null; then
    note "cleanup: stopping terraform (pid $TF_PID)"
    stop_pid "$TF_PID"
  fi
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
"$VENV/bin/moto_server" -H 127.0.0.1 -p "$PORT" >"$WORK/moto.log" 2>&1 &
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

PLANNER=${ECR_SYNC_PLANNER_BIN:-}
if [ -z "$PLANNER" ]; then
  for candidate in "$REPO/target/debug/ecr-sync-planner" "$REPO/target/release/ecr-sync-planner"; do
    [ -x "$candidate" ] && PLANNER=$candidate && break
  done
fi

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

if [ -n "${ECR_SYNC_PLANNER_BIN:-}" ] && [ ! -x "$PLANNER" ]; then
  fail "ECR_SYNC_PLANNER_BIN=$PLANNER is not an executable file"
  PLANNER=""
fi
if [ -n "$PLANNER" ]; then
  note "planner: $PLANNER"
  check "planner validate accepts the config the apply wrote to S3" planner_accepts "$WORK/applied-config.json"
  check "planner validate rejects an invalid config with exit 2" planner_rejects
else
  echo "SKIPPED: planner binary not built (looked for ECR_SYNC_PLANNER_BIN, target/debug and target/release)"
fi

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

# Not yet tested here: running `ecr-sync-planner plan` and `ecr-sync-worker`
# against the applied resources (the fleet binaries do not exist yet).

summary
