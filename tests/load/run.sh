#!/usr/bin/env bash
# Load benchmark of synaxisd against the fake upstream called directly and through nginx.
#
# Everything runs on 127.0.0.1 and every load run is bounded in time. The script starts
# fake-upstream, nginx as a plain reverse proxy to it, and synaxisd, which forwards to it and
# records into a throwaway PostgreSQL database. Against each of the three it runs wrk (closed
# loop, for throughput) and hey (fixed rate, for latency), non-streaming and streaming.
# It prints a summary table, then checks that synaxisd stored one request record for every
# request. The processes it started, its temporary directory and the database are removed on
# exit. `tests/load/run.sh --help` lists the flags; docs/benchmarks.md has recorded results.

set -euo pipefail
# Decimal points and sort order of the parsed tool outputs must not depend on the locale.
export LC_ALL=C

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
readonly REPO_ROOT
readonly APT_PACKAGES="wrk hey nginx postgresql-client jq curl"
readonly MODEL="gpt-4o-mini"
# Seconds of rest between two load runs, so that one run's closing connections do not overlap
# the next run.
readonly PAUSE_SECS=2
# Seconds to wait for a server to print its listening address.
readonly START_TIMEOUT_SECS=30

duration="20s"
connections=50
rate=1000
latency_ms=0
chunk_delay_ms=0
postgres_url="postgres://postgres@127.0.0.1:5432"
install=false
build=true
keep_logs=""
limits_redis=""
limits_profile="all"

usage() {
    cat <<EOF
Usage: tests/load/run.sh [OPTIONS]

Benchmarks synaxisd against the fake upstream called directly and through nginx, on
127.0.0.1 only, and prints a summary table.

Options:
  --duration D          length of each load run, in seconds (20s) or minutes (1m)
                        [default: $duration]
  --connections N       wrk connections and hey workers [default: $connections]
  --rate N              total requests per second of the fixed-rate hey runs, split evenly
                        over the hey workers [default: $rate]
  --latency-ms N        milliseconds the fake upstream waits before each response
                        [default: $latency_ms]
  --chunk-delay-ms N    milliseconds the fake upstream waits between stream chunks
                        [default: $chunk_delay_ms]
  --postgres-url URL    PostgreSQL server URL without a database name; the script creates
                        and drops a database synaxis_bench_<random> there
                        [default: $postgres_url]
  --limits-redis URL    enforce rate limits on the Redis server at URL (such as
                        redis://127.0.0.1:6379), under a key prefix of its own: request and
                        token limits per minute (sliding, throttle) and per day (fixed, block)
                        on the org and the user, and an org cap on concurrent requests, all
                        high enough to admit every request
  --limits-profile P    with --limits-redis: all (the limits above, six counters) or
                        org-minute (only the org's request and token limits per minute and
                        its cap) [default: $limits_profile]
  --keep-logs DIR       copy the raw outputs of wrk, hey, pidstat and the servers into DIR
  --no-build            use the release binaries already built
  --install             install the missing tools with apt-get first (needs root)
  -h, --help            print this help

Needs cargo and the Debian packages $APT_PACKAGES.
pidstat (Debian package sysstat) is optional: with it, the script also prints the CPU use of
each process during each run.
EOF
}

fail() {
    echo "run.sh: $*" >&2
    exit 1
}

parse_args() {
    while (($# > 0)); do
        case "$1" in
            --duration) duration="${2:?--duration needs a value}"; shift 2 ;;
            --connections) connections="${2:?--connections needs a value}"; shift 2 ;;
            --rate) rate="${2:?--rate needs a value}"; shift 2 ;;
            --latency-ms) latency_ms="${2:?--latency-ms needs a value}"; shift 2 ;;
            --chunk-delay-ms) chunk_delay_ms="${2:?--chunk-delay-ms needs a value}"; shift 2 ;;
            --postgres-url) postgres_url="${2:?--postgres-url needs a value}"; shift 2 ;;
            --keep-logs) keep_logs="${2:?--keep-logs needs a value}"; shift 2 ;;
            --limits-redis) limits_redis="${2:?--limits-redis needs a value}"; shift 2 ;;
            --limits-profile) limits_profile="${2:?--limits-profile needs a value}"; shift 2 ;;
            --no-build) build=false; shift ;;
            --install) install=true; shift ;;
            -h | --help) usage; exit 0 ;;
            *) usage >&2; fail "unknown argument: $1" ;;
        esac
    done

    [[ "$duration" =~ ^[1-9][0-9]*[sm]$ ]] \
        || fail "invalid --duration '$duration': pass a whole number of seconds (20s) or minutes (1m)"
    local number
    for number in "$connections" "$rate"; do
        [[ "$number" =~ ^[1-9][0-9]*$ ]] \
            || fail "invalid --connections or --rate '$number': pass a positive whole number"
    done
    for number in "$latency_ms" "$chunk_delay_ms"; do
        [[ "$number" =~ ^[0-9]+$ ]] \
            || fail "invalid --latency-ms or --chunk-delay-ms '$number': pass a whole number of milliseconds"
    done
    [[ "$limits_profile" == all || "$limits_profile" == org-minute ]] \
        || fail "invalid --limits-profile '$limits_profile': pass all or org-minute"
    postgres_url="${postgres_url%/}"
}

duration_seconds() {
    local value="${duration%?}"
    case "$duration" in
        *m) echo $((value * 60)) ;;
        *) echo "$value" ;;
    esac
}

check_tools() {
    local missing=() tool
    for tool in wrk hey nginx psql jq curl; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    if ((${#missing[@]} > 0)) && $install; then
        echo "Installing $APT_PACKAGES with apt-get"
        apt-get update
        # shellcheck disable=SC2086 # the package list is split into words on purpose
        apt-get install -y $APT_PACKAGES
        missing=()
        for tool in wrk hey nginx psql jq curl; do
            command -v "$tool" >/dev/null || missing+=("$tool")
        done
    fi
    if ((${#missing[@]} > 0)); then
        echo "run.sh: missing tools: ${missing[*]}" >&2
        echo "Install them with: apt-get install -y $APT_PACKAGES" >&2
        echo "or rerun this script with --install." >&2
        exit 1
    fi
    command -v cargo >/dev/null || fail "cargo not found: install Rust first (see README.md)"
    command -v pidstat >/dev/null \
        || echo "pidstat not found: CPU use per process is not measured (apt-get install -y sysstat)"
}

# --- processes, temporary files and the database, all removed on exit -----------------------

work_dir=""
bench_database=""
started_pids=()
fake_pid=""

cleanup() {
    local status=$? pid waited index
    trap - EXIT INT TERM
    for ((index = ${#started_pids[@]} - 1; index >= 0; index--)); do
        pid="${started_pids[index]}"
        kill -0 "$pid" 2>/dev/null || continue
        kill -TERM "$pid" 2>/dev/null || true
        for ((waited = 0; waited < 100; waited++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "process $pid did not stop within 10 s of SIGTERM; sending SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    if [[ -n "$bench_database" ]]; then
        psql "$postgres_url/postgres" -qX -v ON_ERROR_STOP=1 \
            -c "DROP DATABASE IF EXISTS $bench_database WITH (FORCE)" >/dev/null \
            || echo "run.sh: failed to drop database $bench_database; drop it by hand" >&2
    fi
    if [[ -n "$work_dir" ]]; then
        if [[ -n "$keep_logs" ]]; then
            mkdir -p "$keep_logs"
            cp "$work_dir"/*.log "$work_dir"/*.out "$keep_logs"/ 2>/dev/null || true
            echo "Raw outputs copied to $keep_logs"
        fi
        rm -rf "$work_dir"
    fi
    exit "$status"
}

# Starts a command in the background with its output in $work_dir/NAME.log, and records its
# pid in started_pids and in the variable last_pid.
start_process() {
    local name="$1"
    shift
    "$@" >"$work_dir/$name.log" 2>&1 &
    last_pid=$!
    started_pids+=("$last_pid")
}

# Runs a command like start_process and waits for it. Bash runs a trap only after the
# foreground command ends, but it interrupts `wait` at once, so SIGTERM cleans up without
# waiting for a load run to finish.
run_process() {
    local status=0
    start_process "$@"
    wait "$last_pid" || status=$?
    forget_process "$last_pid"
    return "$status"
}

# Waits until FILE contains a line matching PATTERN, and fails if process PID ends first.
wait_for_line() {
    local file="$1" pattern="$2" pid="$3" name="$4" tries
    for ((tries = 0; tries < START_TIMEOUT_SECS * 10; tries++)); do
        grep -q -- "$pattern" "$file" 2>/dev/null && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            cat "$file" >&2 || true
            fail "$name exited before it was ready; its output is above"
        fi
        sleep 0.1
    done
    cat "$file" >&2 || true
    fail "$name printed no '$pattern' within $START_TIMEOUT_SECS s; its output is above"
}

# Stops one started process with SIGTERM, waits for it and removes its pid from started_pids.
# Returns the process's exit status.
stop_process() {
    local pid="$1" status=0
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || status=$?
    forget_process "$pid"
    return "$status"
}

forget_process() {
    local pid="$1" kept=() started
    for started in "${started_pids[@]}"; do
        [[ "$started" == "$pid" ]] || kept+=("$started")
    done
    started_pids=("${kept[@]}")
}

# Prints a TCP port on 127.0.0.1 that nothing listens on now.
free_port() {
    local port tries
    for ((tries = 0; tries < 100; tries++)); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    fail "found no free TCP port on 127.0.0.1 in 100 tries"
}

random_hex() {
    od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'
}

# --- the servers ----------------------------------------------------------------------------

build_binaries() {
    if $build; then
        echo "Building release binaries"
        (cd "$REPO_ROOT" && cargo build --release -p synaxisd -p synaxisctl -p synaxis-tests --bins)
    fi
    local target_dir
    target_dir="$(cd "$REPO_ROOT" && cargo metadata --format-version 1 --no-deps | jq -r .target_directory)"
    bin_dir="$target_dir/release"
    local binary
    for binary in fake-upstream synaxisd synaxisctl; do
        [[ -x "$bin_dir/$binary" ]] || fail "$bin_dir/$binary not found: run without --no-build"
    done
}

# Starts fake-upstream on fake_port, after stopping the one started before. fake-upstream
# keeps every request it receives in memory, about 6 KiB each (measured with wrk at 23,000
# requests/s). Each load run gets a fresh one, because otherwise memory grows by gigabytes
# over the runs and a later run pays for the page faults and reallocations of earlier ones.
start_fake_upstream() {
    if [[ -n "$fake_pid" ]]; then
        stop_process "$fake_pid" || true
    fi
    start_process fake-upstream "$bin_dir/fake-upstream" --listen "127.0.0.1:$fake_port" \
        --latency-ms "$latency_ms" --chunk-delay-ms "$chunk_delay_ms"
    fake_pid=$last_pid
    wait_for_line "$work_dir/fake-upstream.log" "^listening on http://" "$fake_pid" fake-upstream
}

start_nginx() {
    local port
    port="$(free_port)"
    mkdir -p "$work_dir/nginx"
    # Access logging is off and keepalive_requests is raised so that nginx, like synaxisd,
    # neither writes a line per request nor closes a client connection after 1,000 requests.
    cat >"$work_dir/nginx/nginx.conf" <<EOF
daemon off;
worker_processes auto;
pid $work_dir/nginx/nginx.pid;
error_log $work_dir/nginx-error.log warn;

events {
    worker_connections 4096;
}

http {
    access_log off;
    client_body_temp_path $work_dir/nginx/client_body;
    proxy_temp_path $work_dir/nginx/proxy;
    fastcgi_temp_path $work_dir/nginx/fastcgi;
    uwsgi_temp_path $work_dir/nginx/uwsgi;
    scgi_temp_path $work_dir/nginx/scgi;
    keepalive_requests 1000000;

    upstream fake_upstream {
        server ${fake_url#http://};
        keepalive 128;
        keepalive_requests 1000000;
    }

    server {
        listen 127.0.0.1:$port;

        location / {
            proxy_pass http://fake_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # Server-sent events reach the client as the upstream sends them.
            proxy_buffering off;
        }
    }
}
EOF
    nginx -t -q -p "$work_dir/nginx" -e "$work_dir/nginx-error.log" -c "$work_dir/nginx/nginx.conf" \
        || fail "nginx rejected its config $work_dir/nginx/nginx.conf"
    start_process nginx nginx -p "$work_dir/nginx" -e "$work_dir/nginx-error.log" \
        -c "$work_dir/nginx/nginx.conf"
    nginx_pid=$last_pid
    nginx_url="http://127.0.0.1:$port"
    local tries
    for ((tries = 0; tries < START_TIMEOUT_SECS * 10; tries++)); do
        curl -s -o /dev/null "$nginx_url/" && break
        kill -0 "$nginx_pid" 2>/dev/null \
            || fail "nginx exited at start: $(cat "$work_dir/nginx-error.log" "$work_dir/nginx.log")"
        sleep 0.1
    done
    echo "nginx (pid $nginx_pid) at $nginx_url"
}

create_database() {
    psql "$postgres_url/postgres" -qXtA -c "SELECT 1" >/dev/null \
        || fail "cannot connect to PostgreSQL at $postgres_url: start it or pass --postgres-url"
    local name
    name="synaxis_bench_$(random_hex 6)"
    psql "$postgres_url/postgres" -qX -v ON_ERROR_STOP=1 -c "CREATE DATABASE $name" >/dev/null
    bench_database="$name"
    bench_database_url="$postgres_url/$name"
    echo "database $bench_database created"
}

start_synaxisd() {
    cat >"$work_dir/synaxisd.toml" <<EOF
[server]
region = "us-east-1"
listen = "127.0.0.1:0"
data_dir = "$work_dir/data"
shutdown_timeout_secs = 30

[log]
level = "warn,synaxisd::app=info"
format = "json"

[database]
url = "$bench_database_url"

[regions.eu-west-1]
key_prefix = "eu"
jurisdiction = "EU"
peer_url = "https://eu-west-1.synaxis.example"

[regions.us-east-1]
key_prefix = "us"
jurisdiction = "US"
peer_url = "https://us-east-1.synaxis.example"

[regions.sa-east-1]
key_prefix = "br"
jurisdiction = "BR"
peer_url = "https://sa-east-1.synaxis.example"

[upstreams.fake]
kind = "openai"
base_url = "$fake_url/v1"

[models.$MODEL]
upstream = "fake"
input_per_million = "0.15"
output_per_million = "0.60"
EOF
    if [[ -n "$limits_redis" ]]; then
        cat >>"$work_dir/synaxisd.toml" <<EOF

[limits]
store = "redis"
redis_url = "$limits_redis"
redis_key_prefix = "synaxis_bench_$(random_hex 6):"

[limits.org]
concurrent_requests = 100000

[limits.org.requests]
per_minute = { limit = 100000000, window = "sliding", action = "throttle" }

[limits.org.tokens]
per_minute = { limit = 100000000000, window = "sliding", action = "throttle" }
EOF
        if [[ "$limits_profile" == all ]]; then
            cat >>"$work_dir/synaxisd.toml" <<EOF

[limits.user.requests]
per_minute = { limit = 100000000, window = "sliding", action = "throttle" }

[limits.user.tokens]
per_minute = { limit = 100000000000, window = "sliding", action = "throttle" }
EOF
            # Per-day limits are added to the org's tables above through dotted keys.
            cat >>"$work_dir/synaxisd.toml" <<EOF

[limits.org.requests.per_day]
limit = 1000000000
window = "fixed"
action = "block"

[limits.org.tokens.per_day]
limit = 1000000000000
window = "fixed"
action = "block"
EOF
        fi
        echo "rate limits on Redis at $limits_redis, profile $limits_profile"
    fi
    operator_token="$(random_hex 24)"
    # Exported for synaxisd only: synaxisctl gets the token through SYNAXIS_TOKEN.
    SYNAXIS_OPERATOR_TOKEN="$operator_token"
    SYNAXIS_KEY_PEPPER="$(random_hex 24)"
    export SYNAXIS_OPERATOR_TOKEN SYNAXIS_KEY_PEPPER
    start_process synaxisd "$bin_dir/synaxisd" --config "$work_dir/synaxisd.toml" serve
    synaxisd_pid=$last_pid
    unset SYNAXIS_OPERATOR_TOKEN SYNAXIS_KEY_PEPPER
    wait_for_line "$work_dir/synaxisd.log" '"listening"' "$synaxisd_pid" synaxisd
    local address
    address="$(grep -m 1 '"listening"' "$work_dir/synaxisd.log" | jq -r .address)"
    synaxisd_url="http://$address"
    echo "synaxisd (pid $synaxisd_pid) at $synaxisd_url"

    local org_id user_id
    org_id="$(synaxisctl org create --name "Load benchmark" --plan enterprise | jq -r .id)"
    # Without --limits-redis, no limit applies: the plan's cap on concurrent requests is lifted
    # too, so that the runs measure the gateway without a limiter call.
    if [[ -z "$limits_redis" ]]; then
        synaxisctl --justification "load benchmark without limits" \
            org override "$org_id" --set concurrent_requests=unlimited >/dev/null
    fi
    user_id="$(synaxisctl user create --org "$org_id" --email load@bench.test | jq -r .id)"
    synaxis_key="$(synaxisctl key create --user "$user_id" --name load | jq -r .secret)"
    [[ "$synaxis_key" == sk-syn-* ]] || fail "key create printed no key secret"
}

synaxisctl() {
    SYNAXIS_ENDPOINT="$synaxisd_url" SYNAXIS_TOKEN="$operator_token" \
        "$bin_dir/synaxisctl" --output json "$@"
}

# --- load runs ------------------------------------------------------------------------------

body_for_mode() {
    case "$1" in
        stream) echo "{\"model\":\"$MODEL\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}],\"stream\":true}" ;;
        *) echo "{\"model\":\"$MODEL\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}]}" ;;
    esac
}

# Sends one request and fails unless it gets 200, so that a broken target stops the run
# before any load is sent. Appends the target to checks.tsv, to count the requests sent.
check_target() {
    local target="$1" url="$2" key="$3" mode="$4" status
    echo "$target" >>"$work_dir/checks.tsv"
    status="$(curl -s -o "$work_dir/check.out" -D "$work_dir/check.headers" -w '%{http_code}' \
        -X POST -H "Authorization: Bearer $key" -H "Content-Type: application/json" \
        -d "$(body_for_mode "$mode")" "$url/v1/chat/completions")"
    [[ "$status" == 200 ]] \
        || fail "$url answered $status to a $mode chat completion: $(cat "$work_dir/check.out")"
    if [[ "$target" == synaxisd && -n "$limits_redis" ]]; then
        grep -qi '^x-ratelimit-remaining-tokens:' "$work_dir/check.headers" \
            || fail "synaxisd answered without x-ratelimit-* headers although limits are on"
    fi
}

# Samples the CPU use of every process once a second for the length of one run, in the
# background. summarize_cpu reads its output.
start_cpu_sampling() {
    local name="$1"
    cpu_pid=""
    command -v pidstat >/dev/null || return 0
    start_process "$name.pidstat" env LC_ALL=C pidstat -u -h 1 "$(duration_seconds)"
    cpu_pid=$last_pid
}

# Prints the mean CPU use, in % of one core, of the load generator, fake-upstream, nginx,
# synaxisd, postgres and all other processes together over the samples of one run. The last
# column shows other work on the machine that competed with the run.
summarize_cpu() {
    local name="$1"
    [[ -n "$cpu_pid" ]] || return 0
    wait "$cpu_pid" || true
    forget_process "$cpu_pid"
    awk -v run="$name" '
        /^#/ || NF < 10 { next }
        { samples[$1] = 1; cpu[$10] += $8 }
        END {
            count = length(samples)
            if (count == 0) count = 1
            printf "%s", run
            split("wrk hey fake-upstream nginx synaxisd postgres", names, " ")
            for (i = 1; i <= 6; i++) {
                printf "\t%.0f", cpu[names[i]] / count
                listed[names[i]] = 1
            }
            for (name in cpu) if (!(name in listed)) other += cpu[name]
            printf "\t%.0f\n", other / count
        }' "$work_dir/$name.pidstat.log" >>"$work_dir/cpu.tsv"
}

run_wrk() {
    local target="$1" url="$2" key="$3" mode="$4" name="$1-$4-wrk"
    cat >"$work_dir/wrk.lua" <<'EOF'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")
wrk.body = os.getenv("BENCH_BODY")
EOF
    echo "  wrk, $mode, $connections connections, $duration"
    start_cpu_sampling "$name"
    # The key goes through the environment, not the command line, where ps would show it.
    BENCH_KEY="$key"
    BENCH_BODY="$(body_for_mode "$mode")"
    export BENCH_KEY BENCH_BODY
    run_process "$name" wrk -t 2 -c "$connections" -d "$duration" -s "$work_dir/wrk.lua" \
        "$url/v1/chat/completions" \
        || fail "wrk failed against $target: $(cat "$work_dir/$name.log")"
    unset BENCH_KEY BENCH_BODY
    summarize_cpu "$name"

    local requests elapsed rps non_2xx socket_errors
    requests="$(awk '/ requests in / { print $1 }' "$work_dir/$name.log")"
    elapsed="$(awk '/ requests in / { sub(/s,?$/, "", $4); print $4 }' "$work_dir/$name.log")"
    # wrk divides by the time its threads ran, which a stalled machine stretches past --duration.
    if awk -v elapsed="${elapsed:-0}" -v planned="$(duration_seconds)" 'BEGIN { exit !(elapsed > planned + 1) }'; then
        echo "  NOTE: wrk ran ${elapsed} s instead of $(duration_seconds) s; its requests/s is averaged over ${elapsed} s"
    fi
    rps="$(awk '/^Requests\/sec:/ { print $2 }' "$work_dir/$name.log")"
    non_2xx="$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$work_dir/$name.log")"
    socket_errors="$(awk '/Socket errors:/ { gsub(",", ""); print $4 + $6 + $8 + $10 }' "$work_dir/$name.log")"
    printf '%s\t%s\twrk\t%s\t%s\t%s\t%s\n' "$target" "$mode" "${requests:-0}" "${rps:-0}" \
        "${non_2xx:-0}" "${socket_errors:-0}" >>"$work_dir/wrk.tsv"
}

run_hey() {
    local target="$1" url="$2" key="$3" mode="$4" name="$1-$4-hey" per_worker
    per_worker="$(awk -v rate="$rate" -v workers="$connections" 'BEGIN { printf "%g", rate / workers }')"
    # NOTE: hey's workers tick in step, so the rate arrives as bursts of up to one request per
    # worker every 1/per_worker seconds, not evenly spaced. By default that is 50 requests
    # within about 3 ms every 50 ms, and p99 includes the time to drain a burst.
    echo "  hey, $mode, $rate requests/s ($connections workers at $per_worker/s), $duration"
    start_cpu_sampling "$name"
    # hey reads headers only from its command line. The key is valid only in the benchmark
    # database, which is dropped at the end.
    run_process "$name" hey -z "$duration" -c "$connections" -q "$per_worker" -m POST \
        -T application/json -H "Authorization: Bearer $key" -d "$(body_for_mode "$mode")" \
        "$url/v1/chat/completions" \
        || fail "hey failed against $target: $(cat "$work_dir/$name.log")"
    summarize_cpu "$name"

    # hey prints latencies in seconds with four decimals, so milliseconds have one.
    awk -v target="$target" -v mode="$mode" '
        /^Status code distribution:/ { section = "status"; next }
        /^Error distribution:/ { section = "errors"; next }
        /^[A-Z]/ { section = "" }
        $1 == "Requests/sec:" { rps = $2 }
        $1 == "50%" && $2 == "in" { p50 = $3 * 1000 }
        $1 == "99%" && $2 == "in" { p99 = $3 * 1000 }
        section == "status" && $1 ~ /^\[[0-9]+\]$/ {
            code = substr($1, 2, length($1) - 2) + 0; count = $2 + 0
            sent += count
            if (code < 200 || code > 299) non_2xx += count
        }
        section == "errors" && $1 ~ /^\[[0-9]+\]$/ {
            count = substr($1, 2, length($1) - 2) + 0
            sent += count; errors += count
        }
        END {
            printf "%s\t%s\they\t%d\t%s\t%d\t%d\t%s\t%s\n", target, mode, sent, rps + 0,
                non_2xx, errors, (p50 == "" ? "n/a" : p50), (p99 == "" ? "n/a" : p99)
        }' "$work_dir/$name.log" >>"$work_dir/hey.tsv"
}

run_target() {
    local target="$1" url="$2" key="$3" mode
    echo "Target $target ($url)"
    local tool
    for tool in wrk hey; do
        for mode in plain stream; do
            start_fake_upstream
            check_target "$target" "$url" "$key" "$mode"
            "run_$tool" "$target" "$url" "$key" "$mode"
            sleep "$PAUSE_SECS"
        done
    done
}

# --- report ---------------------------------------------------------------------------------

print_results() {
    echo
    echo "Results ($duration per run; wrk: $connections connections, closed loop;" \
        "hey: $rate requests/s offered by $connections workers)"
    echo
    join -t $'\t' \
        <(awk -F'\t' '{ print $1 "/" $2 "\t" $5 "\t" $6 + $7 }' "$work_dir/wrk.tsv" | sort) \
        <(awk -F'\t' '{ print $1 "/" $2 "\t" $5 "\t" $8 "\t" $9 "\t" $6 + $7 }' "$work_dir/hey.tsv" | sort) \
        >"$work_dir/joined.tsv"
    {
        printf 'target\tmode\twrk req/s\twrk non-2xx+errors\they req/s\they p50 ms\they p99 ms\they non-2xx+errors\n'
        local target mode
        for target in direct nginx synaxisd; do
            for mode in plain stream; do
                awk -F'\t' -v row="$target/$mode" -v target="$target" -v mode="$mode" '
                    $1 == row { printf "%s\t%s\t%.0f\t%d\t%.0f\t%s\t%s\t%d\n", target, mode, $2, $3, $4, $5, $6, $7 }
                ' "$work_dir/joined.tsv"
            done
        done
    } | column -t -s $'\t'

    echo
    echo "Ratios"
    echo
    {
        printf 'mode\tsynaxisd req/s as %% of nginx\tsynaxisd req/s as %% of direct\tnginx req/s as %% of direct\tp99 added by synaxisd ms\tp99 added by nginx ms\n'
        awk -F'\t' '
            { rps[$1] = $2; p99[$1] = $6 }
            END {
                split("plain stream", modes, " ")
                for (i = 1; i <= 2; i++) {
                    m = modes[i]
                    printf "%s\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\n", m,
                        100 * rps["synaxisd/" m] / rps["nginx/" m],
                        100 * rps["synaxisd/" m] / rps["direct/" m],
                        100 * rps["nginx/" m] / rps["direct/" m],
                        p99["synaxisd/" m] - p99["direct/" m],
                        p99["nginx/" m] - p99["direct/" m]
                }
            }' "$work_dir/joined.tsv"
    } | column -t -s $'\t'

    if [[ -s "$work_dir/cpu.tsv" ]]; then
        echo
        echo "Mean CPU use during each run, % of one core (pidstat; the machine has $(nproc) cores)"
        echo
        {
            printf 'run\twrk\they\tfake-upstream\tnginx\tsynaxisd\tpostgres\tother\n'
            cat "$work_dir/cpu.tsv"
        } | column -t -s $'\t'
    fi
}

# Checks the throughput, latency and error targets of docs/benchmarks.md, one line for each.
print_targets() {
    echo
    echo "Targets"
    awk -F'\t' '
        { rps[$1] = $2; p99[$1] = $6; bad[$1] = $3 + $7 }
        END {
            split("plain stream", modes, " ")
            for (i = 1; i <= 2; i++) {
                m = modes[i]
                share = 100 * rps["synaxisd/" m] / rps["nginx/" m]
                added = p99["synaxisd/" m] - p99["direct/" m]
                printf "  %s: throughput %.1f%% of nginx (target >= 60%%): %s\n", m, share,
                    (share >= 60 ? "met" : "MISSED")
                printf "  %s: added p99 %.1f ms (target <= 2 ms): %s\n", m, added,
                    (added <= 2 ? "met" : "MISSED")
                printf "  %s: synaxisd non-2xx and errors %d (target 0): %s\n", m,
                    bad["synaxisd/" m], (bad["synaxisd/" m] == 0 ? "met" : "MISSED")
            }
        }' "$work_dir/joined.tsv"
}

# Stops synaxisd with SIGTERM, which stores the pending request records, then compares the
# stored records with the requests the tools report as sent.
check_records() {
    echo
    echo "Stopping synaxisd with SIGTERM"
    local status=0
    stop_process "$synaxisd_pid" || status=$?
    if [[ "$status" != 0 ]]; then
        echo "synaxisd exited with status $status. The last lines of its log:"
        tail -n 20 "$work_dir/synaxisd.log"
    fi

    local wrk_completed hey_sent checks records
    wrk_completed="$(awk -F'\t' '$1 == "synaxisd" { sum += $4 } END { print sum + 0 }' "$work_dir/wrk.tsv")"
    hey_sent="$(awk -F'\t' '$1 == "synaxisd" { sum += $4 } END { print sum + 0 }' "$work_dir/hey.tsv")"
    checks="$(grep -c -x synaxisd "$work_dir/checks.tsv")"
    records="$(psql "$bench_database_url" -qXtA -c "SELECT count(*) FROM requests")"
    local sent=$((wrk_completed + hey_sent + checks))
    # wrk stops with up to one request in flight on each connection, which it neither counts
    # nor waits for. synaxisd still records those, with 499 when the client was gone.
    local in_flight_max=$((2 * connections))

    echo
    echo "Request records"
    echo "  sent to synaxisd and counted by the tools: $sent" \
        "(wrk completed $wrk_completed, hey sent $hey_sent, checks $checks)"
    echo "  plus requests in flight when wrk stopped:  0 to $in_flight_max"
    echo "  rows in requests:                          $records"
    echo "  rows by status code:"
    psql "$bench_database_url" -qXtA -F ' ' \
        -c "SELECT status_code, count(*) FROM requests GROUP BY status_code ORDER BY status_code" \
        | sed 's/^/    /'
    if ((records >= sent && records <= sent + in_flight_max)); then
        echo "  a record for every request: met ($((records - sent)) records of requests cut off by wrk's stop)"
    else
        echo "  a record for every request: MISSED ($((records - sent)) against the count of the tools)"
    fi
}

main() {
    parse_args "$@"
    check_tools

    # Settings from the caller's environment would change the config that synaxisd reads.
    local variable
    for variable in $(compgen -e); do
        [[ "$variable" == SYNAXIS_* || "$variable" == RUST_LOG ]] && unset "$variable"
    done

    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    work_dir="$(mktemp -d -t synaxis-load.XXXXXX)"
    : >"$work_dir/wrk.tsv"
    : >"$work_dir/hey.tsv"
    : >"$work_dir/cpu.tsv"
    : >"$work_dir/checks.tsv"

    build_binaries
    fake_port="$(free_port)"
    fake_url="http://127.0.0.1:$fake_port"
    start_fake_upstream
    echo "fake-upstream at $fake_url, restarted before each load run"
    start_nginx
    create_database
    start_synaxisd

    echo "Machine: $(nproc) cores; load runs of $duration each"
    if git -C "$REPO_ROOT" rev-parse --short HEAD >/dev/null 2>&1; then
        local changes=no
        [[ -z "$(git -C "$REPO_ROOT" status --porcelain --untracked-files=no)" ]] || changes=yes
        echo "Source: commit $(git -C "$REPO_ROOT" rev-parse --short HEAD), uncommitted changes to tracked files: $changes"
    fi
    run_target direct "$fake_url" "bench"
    run_target nginx "$nginx_url" "bench"
    run_target synaxisd "$synaxisd_url" "$synaxis_key"

    print_results
    print_targets
    check_records
}

main "$@"
