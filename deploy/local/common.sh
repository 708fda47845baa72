# Shared by the scripts of deploy/local: settings, and the start and stop of one region.
# shellcheck shell=bash

regions=(eu-west-1 us-east-1 sa-east-1)
# The ports of a running deployment are the ones it was started with.
port_base=${SYNAXIS_LOCAL_PORT_BASE:-$(cat "$run/port_base" 2>/dev/null || echo 8100)}
upstream_port=$((port_base + 9))
database_url=${SYNAXIS_LOCAL_DATABASE_URL:-postgres://postgres@127.0.0.1:5432}
redis_url=${SYNAXIS_LOCAL_REDIS_URL:-redis://127.0.0.1:6379}
kafka=${SYNAXIS_LOCAL_KAFKA:-127.0.0.1:9092}

log() { printf '==> %s\n' "$*"; }

port_open() {
  local host=${1%:*} port=${1##*:}
  (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null
}

# Waits until the process PID listens on HOST:PORT; fails at once, with the end of LOG, when
# the process has exited.
wait_for_listener() {
  local what=$1 pid=$2 address=$3 log_file=$4
  for _ in $(seq 1 300); do
    if port_open "$address"; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$what exited before listening on $address; the end of $log_file:" >&2
      tail -n 5 "$log_file" >&2
      return 1
    fi
    sleep 0.2
  done
  echo "$what did not listen on $address within 60 s; see $log_file" >&2
  return 1
}

# Prints the path of the tansu binary, building it first when it is missing (about 30 minutes
# on two cores, once per machine).
ensure_tansu() {
  local tools="$HOME/.cache/synaxis-tools"
  local tansu=${SYNAXIS_TANSU:-$tools/bin/tansu}
  if [ ! -x "$tansu" ]; then
    echo "building the tansu broker into $tools (about 30 minutes, once per machine)" >&2
    cargo install tansu@0.6.0 --locked --no-default-features --features dynostore \
      --root "$tools" >&2
  fi
  echo "$tansu"
}

region_index() {
  case $1 in
    eu-west-1) echo 1 ;;
    us-east-1) echo 2 ;;
    sa-east-1) echo 3 ;;
    *) echo "unknown region $1: use one of ${regions[*]}" >&2; return 1 ;;
  esac
}

region_port() { echo $((port_base + $(region_index "$1"))); }
database_name() { echo "synaxis_local_${1//-/_}"; }
secret() { grep "^$1=" "$run/secrets.env" | cut -d= -f2-; }
operator_token() { secret "OPERATOR_TOKEN_${1//-/_}"; }

# Prints the regions whose synaxisd runs.
running_regions() {
  local region pid_file
  for region in "${regions[@]}"; do
    pid_file="$run/$region.pid"
    if [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
      echo "$region"
    fi
  done
}

write_config() {
  local region=$1 index
  index=$(region_index "$region")
  cat >"$run/$region.toml" <<TOML
[server]
region = "$region"
listen = "127.0.0.1:$(region_port "$region")"
data_dir = "$run/$region-data"
shutdown_timeout_secs = 10

[server.tls]
cert_file = "$run/tls/cert.pem"
key_file = "$run/tls/key.pem"

[log]
level = "info"
format = "json"

[database]
url = "$database_url/$(database_name "$region")"
max_connections = 8

[events]
bus = "kafka"
topic_prefix = "$(secret TOPIC_PREFIX)"

[peer]
ca_file = "$run/tls/ca.pem"

[health]
probe_interval_ms = 500
probe_timeout_ms = 500
down_after = 3
up_after = 2

[regions.eu-west-1]
key_prefix = "eu"
jurisdiction = "EU"
peer_url = "https://127.0.0.1:$(region_port eu-west-1)"
kafka_brokers = "$kafka"

[regions.us-east-1]
key_prefix = "us"
jurisdiction = "US"
peer_url = "https://127.0.0.1:$(region_port us-east-1)"
kafka_brokers = "$kafka"

[regions.sa-east-1]
key_prefix = "br"
jurisdiction = "BR"
peer_url = "https://127.0.0.1:$(region_port sa-east-1)"
kafka_brokers = "$kafka"

[limits]
store = "redis"
redis_url = "$redis_url/$index"

[signup]
enabled = true

[upstreams.fake]
kind = "openai"
base_url = "http://127.0.0.1:$upstream_port/v1"

[models.gpt-4o-mini]
upstream = "fake"
input_per_million = "0.15"
output_per_million = "0.60"
TOML
}

start_region() {
  local region=$1 port pid_file
  port=$(region_port "$region")
  pid_file="$run/$region.pid"
  if [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
    return 0
  fi
  log "$region on https://127.0.0.1:$port"
  (
    SYNAXIS_KEY_PEPPER=$(secret SYNAXIS_KEY_PEPPER)
    SYNAXIS_PEER_SECRET=$(secret SYNAXIS_PEER_SECRET)
    SYNAXIS_OPERATOR_TOKEN=$(operator_token "$region")
    export SYNAXIS_KEY_PEPPER SYNAXIS_PEER_SECRET SYNAXIS_OPERATOR_TOKEN
    exec setsid nohup "${CARGO_TARGET_DIR:-$root/target}/debug/synaxisd" --config "$run/$region.toml" serve \
      >>"$run/$region.log" 2>&1
  ) &
  echo $! >"$pid_file"
  local pid
  pid=$(cat "$pid_file")
  for _ in $(seq 1 300); do
    if curl -sf --cacert "$run/tls/ca.pem" -o /dev/null "https://127.0.0.1:$port/healthz"; then
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$region stopped at start; the last lines of $run/$region.log:" >&2
      tail -n 3 "$run/$region.log" >&2
      echo "when another checkout's deployment used these databases, run deploy/local/down --purge first" >&2
      rm -f "$pid_file"
      return 1
    fi
    sleep 0.2
  done
  echo "$region did not become ready within 60 s; see $run/$region.log" >&2
  return 1
}

stop_region() {
  local region=$1 pid_file pid
  pid_file="$run/$region.pid"
  [ -f "$pid_file" ] || return 0
  pid=$(cat "$pid_file")
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping $region (pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 1 150); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
  fi
  rm -f "$pid_file"
}

# Stops a service that up started, by the pid in its pid file.
stop_service() {
  local service=$1 pid
  if [ -f "$run/$service.pid" ]; then
    pid=$(cat "$run/$service.pid")
    if kill -0 "$pid" 2>/dev/null; then
      log "stopping $service (pid $pid)"
      kill -TERM "$pid"
    fi
    rm -f "$run/$service.pid"
  fi
}

write_deployment() {
  {
    printf '{\n  "ca_file": "%s",\n  "upstream_url": "http://127.0.0.1:%s/v1",\n  "regions": {\n' \
      "$run/tls/ca.pem" "$upstream_port"
    local first=1
    for region in "${regions[@]}"; do
      [ $first -eq 1 ] || printf ',\n'
      first=0
      printf '    "%s": {"url": "https://127.0.0.1:%s", "database_url": "%s", "operator_token": "%s", "pid_file": "%s"}' \
        "$region" "$(region_port "$region")" "$database_url/$(database_name "$region")" \
        "$(operator_token "$region")" "$run/$region.pid"
    done
    printf '\n  }\n}\n'
  } >"$run/deployment.json"
  chmod 600 "$run/deployment.json"
}
