# Shared by scripts/lib.sh and infra/test/run.sh (sourced, defines one function):
# write_registry_config FILE DATA_DIR PORT SECRET — a docker-registry config serving DATA_DIR
# on 127.0.0.1:PORT, quiet (errors only, no access log), deletes allowed.
write_registry_config() {
  cat >"$1" <<YML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $2
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$3
  secret: $4
YML
}
