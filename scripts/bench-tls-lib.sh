# Sourced by scripts/bench.sh after scripts/lib.sh (uses its WORK, STARTED_PIDS, free_port and
# registry-config.sh's write_registry_config): docker-registry over TLS on loopback with a
# throwaway CA, stopping single registries by PID, and per-process CPU time from /proc.

# make_tls_certs DIR -> DIR/ca.pem (CA), DIR/server.pem + DIR/server.key (SAN IP:127.0.0.1),
# DIR/certs.d/ca.crt (a cert dir for skopeo); sets TLS_DIR=DIR.
make_tls_certs() {
  local d=$1
  mkdir -p "$d/certs.d"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=ecr-sync bench CA" -addext basicConstraints=critical,CA:TRUE \
    -addext keyUsage=critical,keyCertSign,cRLSign -keyout "$d/ca.key" -out "$d/ca.pem" 2>/dev/null
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
    -keyout "$d/server.key" -out "$d/server.csr" 2>/dev/null
  printf '%s\n' subjectAltName=IP:127.0.0.1 basicConstraints=CA:FALSE \
    keyUsage=critical,digitalSignature extendedKeyUsage=serverAuth >"$d/ext.cnf"
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
    -days 2 -extfile "$d/ext.cnf" -out "$d/server.pem" 2>/dev/null
  cp "$d/ca.pem" "$d/certs.d/ca.crt"
  TLS_DIR=$d
}

# start_bench_registry NAME tls|plain [DATA_DIR] -> REG_<NAME>=127.0.0.1:PORT, PID_<NAME>=PID.
# DATA_DIR defaults to a fresh $WORK/NAME/data (an empty registry).
start_bench_registry() {
  local name=$1 mode=$2 data=${3:-} port dir pid scheme=http curl_ca=()
  port=$(free_port); dir="$WORK/$name"; mkdir -p "$dir"
  if [[ -z $data ]]; then data="$dir/data"; mkdir -p "$data"; fi
  write_registry_config "$dir/config.yml" "$data" "$port" ecr-sync-local
  if [[ $mode == tls ]]; then
    awk -v c="$TLS_DIR/server.pem" -v k="$TLS_DIR/server.key" \
      '{print} /^http:/{print "  tls:"; print "    certificate: " c; print "    key: " k}' \
      "$dir/config.yml" >"$dir/config.tls.yml"
    mv "$dir/config.tls.yml" "$dir/config.yml"
    scheme=https; curl_ca=(--cacert "$TLS_DIR/ca.pem")
  fi
  docker-registry serve "$dir/config.yml" >"$dir/log" 2>&1 &
  pid=$!; STARTED_PIDS+=("$pid")
  for _ in $(seq 100); do curl -fsS "${curl_ca[@]}" "$scheme://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -fsS "${curl_ca[@]}" "$scheme://127.0.0.1:$port/v2/" >/dev/null || { echo "registry $name did not start:"; tail -5 "$dir/log"; exit 1; }
  printf -v "REG_$name" '%s' "127.0.0.1:$port"
  printf -v "PID_$name" '%s' "$pid"
}

# stop_bench_registry NAME [keep] -> stops exactly PID_<NAME>, forgets it, removes its directory
# unless "keep" (its data may be reused by a later registry).
stop_bench_registry() {
  local name=$1 keep=${2:-} pidvar="PID_$1" pid rest=() p
  pid=${!pidvar}
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for p in "${STARTED_PIDS[@]}"; do [[ $p == "$pid" ]] || rest+=("$p"); done
  STARTED_PIDS=("${rest[@]}")
  [[ $keep == keep ]] || rm -rf "${WORK:?}/$name"
}

# cpu_ticks PID... -> user+system clock ticks of those processes so far
cpu_ticks() {
  local t=0 p
  for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  echo "$t"
}
