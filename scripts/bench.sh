#!/usr/bin/env bash
# Benchmark (not a test), all over TLS on loopback (docker-registry with a throwaway CA, HTTP/2):
# sync (a) SMALL_REPOS × SMALL_TAGS small single-layer images, cold then warm, and (b) one image
# with a BIG_MIB MiB layer, with ecr-sync, ocync (if built) and skopeo; time a raw curl GET|PUT
# of the big blob; RUNS rounds, each tool into a fresh empty destination registry per round; print
# medians of wall time, user+sys CPU, peak RSS, the registries' CPU, ratios, requests per tag.
#   SMALL_REPOS=10 SMALL_TAGS=50 BIG_MIB=512 RUNS=3  the workload
#   OCYNC_BIN   ocync binary [/work/peers/target/release/ocync]; skipped when absent
#   CARGO_JOBS  cargo -j for building ecr-sync [1];  SKIP_BUILD=1 uses the binaries in target/release
#   ECR_SYNC_BIN, TESTKIT_BIN  other binaries than target/release/ecr-sync[-planner], ecr-sync-testkit
set -euo pipefail
cd "$(dirname "$0")/.."
SMALL_REPOS=${SMALL_REPOS:-10}
SMALL_TAGS=${SMALL_TAGS:-50}
BIG_MIB=${BIG_MIB:-512}
RUNS=${RUNS:-3}
OCYNC_BIN=${OCYNC_BIN:-/work/peers/target/release/ocync}

planner_pkg=$(sed -n 's/^name *= *"\(.*\)"/\1/p' planner/Cargo.toml | head -1)
[[ ${SKIP_BUILD:-} == 1 ]] || cargo build --release -q -j "${CARGO_JOBS:-1}" -p "$planner_pkg" -p ecr-sync-testkit
if [[ -x target/release/ecr-sync ]]; then BIN=$PWD/target/release/ecr-sync; else BIN=$PWD/target/release/ecr-sync-planner; fi
BIN=${ECR_SYNC_BIN:-$BIN}
TESTKIT=${TESTKIT_BIN:-$PWD/target/release/ecr-sync-testkit}
tools=(ecr-sync)
if [[ -x $OCYNC_BIN ]]; then tools+=(ocync); else echo "ocync: not built ($OCYNC_BIN missing); skipping it"; OCYNC_BIN=; fi
tools+=(skopeo)

source scripts/lib.sh
source scripts/bench-tls-lib.sh
mkdir -p "$WORK/logs"
make_tls_certs "$WORK/tls"
CA=$TLS_DIR/ca.pem CERTS=$TLS_DIR/certs.d
RESULTS=$WORK/results.tsv; : >"$RESULTS"
HZ=$(getconf CLK_TCK)

# --- seed over plain HTTP, then serve the same storage over TLS
start_bench_registry SEED plain "$WORK/src-data"
"$TESTKIT" seed --registry "http://$REG_SEED" --prefix bench --repos "$SMALL_REPOS" --tags "$SMALL_TAGS" --big-mib "$BIG_MIB" | tail -2
stop_bench_registry SEED
start_bench_registry SRC tls "$WORK/src-data"
small_repos=(); for i in $(seq 0 $((SMALL_REPOS - 1))); do small_repos+=("bench/app$i"); done
ntags=$((SMALL_REPOS * SMALL_TAGS))
digest=$(curl -fsS --cacert "$CA" -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' "https://$REG_SRC/v2/bench/big/manifests/v1" | python3 -c 'import json,sys; m=json.load(sys.stdin); print(max(m["layers"], key=lambda l: l["size"])["digest"])')

# measure TOOL PHASE RUN CMD... -> runs CMD under /usr/bin/time; appends wall, user+sys CPU, max
# RSS (MiB, largest single process) and the CPU of the source + destination registries meanwhile.
measure() {
  local tool=$1 phase=$2 run=$3 log r0 r1 e u s m; shift 3
  log="$WORK/logs/$tool-$phase-$run.log"
  # Let the registries finish what the previous step left (Go's garbage collector keeps working
  # after a busy step), so that work is not billed to this one.
  sleep "${SETTLE_SECONDS:-3}"
  r0=$(cpu_ticks "$PID_SRC" "$PID_DST")
  if ! /usr/bin/time -f '%e %U %S %M' -o "$WORK/time.out" "$@" >"$log" 2>&1; then
    echo "FAILED: $tool $phase (run $run): $*"; tail -20 "$log"; exit 1
  fi
  r1=$(cpu_ticks "$PID_SRC" "$PID_DST")
  read -r e u s m <"$WORK/time.out"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$tool" "$phase" "$run" "$e" "$(python3 -c "print(round($u+$s,2))")" "$((m / 1024))" \
    "$(python3 -c "print(round(($r1-$r0)/$HZ,2))")" >>"$RESULTS"
}

# check_small TOOL RUN -> every small tag arrived in the destination
check_small() {
  local got=0 r n
  for r in "${small_repos[@]}"; do
    n=$(curl -fsS --cacert "$CA" "https://$REG_DST/v2/$r/tags/list" | python3 -c 'import json,sys; print(len(json.load(sys.stdin).get("tags") or []))')
    got=$((got + n))
  done
  [[ $got == "$ntags" ]] || { echo "FAILED: $1 run $2 left $got of $ntags tags in the destination"; exit 1; }
}

ecr_config() { # FILE REPO... -> ecr-sync config from SRC to DST, trusting the bench CA
  local file=$1; shift
  python3 - "$file" "$REG_SRC" "$REG_DST" "$CA" "$@" <<'PY'
import json, sys
file, src, dst, ca, repos = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
json.dump({"repos": [{"source": f"{src}/{r}"} for r in repos],
           "destination_registry": dst,
           "registries": {src: {"ca_file": ca}, dst: {"ca_file": ca}}},
          open(file, "w"), indent=2)
PY
}

ocync_config() { # FILE CACHE_DIR REPO... -> ocync config; referrers off (ecr-sync does not copy them)
  local file=$1 cache=$2; shift 2
  { printf 'global:\n  cache_dir: %s\n' "$cache"
    printf 'registries:\n  src: { url: "%s", auth_type: anonymous }\n  dst: { url: "%s", auth_type: anonymous }\n' "$REG_SRC" "$REG_DST"
    printf 'defaults:\n  source: src\n  targets: dst\n  artifacts: { enabled: false }\n  tags: { glob: "*" }\nmappings:\n'
    local r; for r in "$@"; do printf '  - { from: %s, to: %s }\n' "$r" "$r"; done
  } >"$file"
}

run_ecr_sync() {
  local run=$1 d="$WORK/ecr-sync-$1"; mkdir -p "$d"
  ecr_config "$d/small.json" "${small_repos[@]}"
  ecr_config "$d/big.json" bench/big
  measure ecr-sync cold "$run" "$BIN" sync --config "$d/small.json" --ledger "$d/l.db" --report "$d/cold.json" --no-progress
  check_small ecr-sync "$run"
  measure ecr-sync warm "$run" "$BIN" sync --config "$d/small.json" --ledger "$d/l.db" --report "$d/warm.json" --no-progress
  measure ecr-sync big "$run" "$BIN" sync --config "$d/big.json" --ledger "$d/l.db" --report "$d/big.report.json" --no-progress
  python3 - "$d" "$ntags" "$run" >>"$WORK/ecr-requests.tsv" <<'PY'
import json, sys
d, n, run = sys.argv[1], int(sys.argv[2]), sys.argv[3]
c, w, b = (json.load(open(f"{d}/{f}.json")) for f in ("cold", "warm", "big.report"))
print(run, sum(c["requests"].values()) / n, sum(w["requests"].values()) / n,
      sum(w["blob_requests"].values()), c["peak_rss_bytes"] // 1048576, b["peak_rss_bytes"] // 1048576,
      c["failed"] + w["failed"] + b["failed"], sep="\t")
PY
}

run_ocync() {
  local run=$1 d="$WORK/ocync-$1"; mkdir -p "$d"
  ocync_config "$d/small.yaml" "$d/cache" "${small_repos[@]}"
  ocync_config "$d/big.yaml" "$d/cache" bench/big
  # ocync trusts the platform's roots (rustls-platform-verifier); SSL_CERT_FILE replaces them.
  measure ocync cold "$run" env SSL_CERT_FILE="$CA" "$OCYNC_BIN" sync -c "$d/small.yaml" --json
  check_small ocync "$run"
  measure ocync warm "$run" env SSL_CERT_FILE="$CA" "$OCYNC_BIN" sync -c "$d/small.yaml" --json
  measure ocync big "$run" env SSL_CERT_FILE="$CA" "$OCYNC_BIN" sync -c "$d/big.yaml" --json
}

run_skopeo() {
  local run=$1 small="$WORK/skopeo-small.sh"
  { echo 'set -e'
    local r; for r in "${small_repos[@]}"; do
      echo "skopeo sync --src docker --dest docker --src-cert-dir '$CERTS' --dest-cert-dir '$CERTS' '$REG_SRC/$r' '$REG_DST/${r%/*}'"
    done
  } >"$small"
  measure skopeo cold "$run" bash "$small"
  check_small skopeo "$run"
  measure skopeo warm "$run" bash "$small"
  measure skopeo big "$run" skopeo copy --src-cert-dir "$CERTS" --dest-cert-dir "$CERTS" "docker://$REG_SRC/bench/big:v1" "docker://$REG_DST/bench/big:v1"
}

run_curl() {
  local run=$1 s="$WORK/curl-big.sh"
  cat >"$s" <<SH
set -eo pipefail
loc=\$(curl -fsS --cacert '$CA' -X POST -D - -o /dev/null 'https://$REG_DST/v2/raw/big/blobs/uploads/' | tr -d '\r' | awk 'tolower(\$1)=="location:"{print \$2}')
curl -fsS --cacert '$CA' 'https://$REG_SRC/v2/bench/big/blobs/$digest' | curl -fsS --cacert '$CA' -X PUT -H 'Content-Type: application/octet-stream' -T - "\$loc&digest=$digest" >/dev/null
SH
  measure curl big "$run" bash "$s"
}

for run in $(seq 1 "$RUNS"); do
  for tool in "${tools[@]}" curl; do
    start_bench_registry DST tls
    "run_${tool//-/_}" "$run"
    stop_bench_registry DST
  done
  echo "run $run/$RUNS done"
done

python3 - "$RESULTS" "$WORK/ecr-requests.tsv" "$ntags" "$SMALL_REPOS" "$BIG_MIB" "$RUNS" "${tools[@]}" <<'PY'
import sys
from collections import defaultdict
from statistics import median
res, reqs, ntags, nrepos, big_mib, runs, tools = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:7]), sys.argv[7:]
m = defaultdict(list)  # (tool, phase) -> [(wall, cpu, rss_kib, registries_cpu)]
for line in open(res):
    t, p, _, *v = line.split("\t")
    m[t, p].append(tuple(map(float, v)))
def med(t, p, i):
    return median(x[i] for x in m[t, p]) if m[t, p] else None
def cell(t, p, i, fmt="{:.2f}"):
    v = med(t, p, i)
    if v is None: return "-"
    s = fmt.format(v)
    if i == 0 and len(m[t, p]) > 1:
        s += f" ({min(x[0] for x in m[t, p]):.2f}-{max(x[0] for x in m[t, p]):.2f})"
    return s
def ratio(p, i, other):
    a, b = med("ecr-sync", p, i), med(other, p, i)
    return f"{a / b:.2f}" if a is not None and b else "-"
print(f"\nTLS benchmark: {ntags} small images in {nrepos} repositories + one {big_mib} MiB layer; "
      f"median of {runs} run(s), (min-max) for wall times")
others = [t for t in tools if t != "ecr-sync"]
head = f"{'':34}" + "".join(f"{t:>22}" for t in tools) + "".join(f"{'ecr-sync/' + o:>18}" for o in others)
print(head)
rows = [("wall", 0, "s"), ("CPU user+sys", 1, "s"), ("registries' CPU", 3, "s"), ("peak RSS", 2, "MiB")]
for p, pname in (("cold", "small, cold"), ("warm", "small, warm"), ("big", "big layer")):
    for label, i, unit in rows:
        fmt = "{:.0f}" if unit == "MiB" else "{:.2f}"
        print(f"{pname + ' ' + label + ' (' + unit + ')':34}" + "".join(f"{cell(t, p, i, fmt):>22}" for t in tools)
              + "".join(f"{ratio(p, i, o):>18}" for o in others))
cw = med("curl", "big", 0)
ew = med("ecr-sync", "big", 0)
print(f"raw curl GET|PUT of the big blob over TLS: {cell('curl', 'big', 0)} s; "
      f"ecr-sync's big-layer copy reaches {100 * cw / ew:.0f}% of that rate")
try:
    rows = [l.split("\t") for l in open(reqs)]
    c = median(float(r[1]) for r in rows); w = median(float(r[2]) for r in rows)
    print(f"ecr-sync requests per tag: cold {c:.2f}, warm {w:.2f} (blob requests when warm: "
          f"{max(int(r[3]) for r in rows)}); self-reported peak RSS small {median(int(r[4]) for r in rows)} MiB, "
          f"big {median(int(r[5]) for r in rows)} MiB; failed jobs {sum(int(r[6]) for r in rows)}")
except FileNotFoundError:
    pass
print("registries' CPU = source + destination docker-registry CPU during the run; "
      "peak RSS = largest single process (/usr/bin/time %M)")
PY
