#!/usr/bin/env bash
# Load benchmark for `elior serve` (run on demand, never in the test suite).
#
#   examples/load_bench.sh            # elior + bare axum hello
#   REFERENCE=1 examples/load_bench.sh  # also the FastAPI reference (needs a venv, see below)
#   AB_ROUNDS=5 examples/load_bench.sh  # also N rounds alternating elior's and the hello's
#                                       # /health, each round's ratio (both see the same load)
#   BIN=new/elior BASE_BIN=old/elior AB_ROUNDS=5 examples/load_bench.sh
#                                       # before/after: two elior builds (same profile), N
#                                       # alternating rounds of /health and /api/auth/me on
#                                       # each, every round's new/old ratio and the mean; no
#                                       # cargo build, no hello (AB_CONNS="64", AB_ROUTES=
#                                       # "/api/auth/me" narrow it). Build both with one profile,
#                                       # e.g. --config 'profile.bench-fast.inherits="release"'
#                                       # --config 'profile.bench-fast.lto="thin"'.
#
# Measures GET /health and an authenticated GET /api/auth/me with wrk at 64 and 256
# connections: requests/s, p50 and p99 latency, peak RSS (VmHWM), and the time from
# process start to the first 200. The reference is examples/reference/app.py under
# uvicorn with 4 workers, uvloop and httptools, from a venv at $REF_VENV (default
# /tmp/refvenv: python3 -m venv /tmp/refvenv && /tmp/refvenv/bin/pip install fastapi
# 'uvicorn[standard]' sqlalchemy pyjwt). Needs wrk and curl (Debian packages).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
THREADS=${THREADS:-2}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

if [ -n "${BIN:-}" ]; then
  bin=$BIN
else
  cargo build --release --quiet --bin elior --example hello
  bin=target/release/elior
fi
echo "machine load at start: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores)"

wait_200() { # url -> prints ms until the first 200
  local start=$1 url=$2
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "$url")" = 200 ]; do sleep 0.005; done
  echo $(( ($(date +%s%N) - start) / 1000000 ))
}

peak_rss_mib() { # sum of VmHWM over pids, in MiB
  local total=0 kb
  for p in "$@"; do
    kb=$(awk '/VmHWM/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
    total=$(( total + kb ))
  done
  echo "$(( total / 1024 ))"
}

run_wrk() { # label url conns [header]
  local label=$1 url=$2 conns=$3 header=${4:-}
  local out
  if [ -n "$header" ]; then
    out=$(wrk -t"$THREADS" -c"$conns" -d"$DURATION" --latency -H "$header" "$url")
  else
    out=$(wrk -t"$THREADS" -c"$conns" -d"$DURATION" --latency "$url")
  fi
  local rps p50 p99 errors
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  errors=$(grep -E 'Non-2xx|Socket errors' <<<"$out" | tr '\n' ' ' || true)
  printf '%-28s %5s conns  %12s req/s  p50 %8s  p99 %8s  %s\n' "$label" "$conns" "$rps" "$p50" "$p99" "$errors"
}

start_elior() { # binary port name -> sets epid and token
  local binary=$1 port=$2 name=$3
  mkdir -p "$work/$name"
  start=$(date +%s%N)
  # The API image sets the same glibc tuning (src/docker/image.rs, MALLOC_ENV), and LOG_LEVEL=info
  # is the default and what deploy sets (a log span for every API request).
  (cd "$work/$name" && exec env -i JWT_SECRET=bench-secret-bench-secret-bench-secret LOG_LEVEL=info \
    MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=131072 \
    "$binary" serve --bind "127.0.0.1:$port" 2>"$work/$name.log") &
  epid=$!; pids+=("$epid")
  echo "$name: first 200 after $(wait_200 "$start" "http://127.0.0.1:$port/health") ms"
  curl -s -o /dev/null -X POST "http://127.0.0.1:$port/api/auth/register" -H 'content-type: application/json' \
    -d '{"username":"bench","email":"bench@example.com","password":"bench-password","full_name":"Bench"}'
  token=$(curl -s -X POST "http://127.0.0.1:$port/api/auth/login" -H 'content-type: application/json' \
    -d '{"username":"bench","password":"bench-password"}' | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
}

bin=$(realpath "$bin")
if [ -n "${BASE_BIN:-}" ]; then
  echo "== before/after: $BASE_BIN (base) vs $bin (new), alternating rounds"
  start_elior "$bin" 18080 new; new_pid=$epid; new_token=$token
  start_elior "$(realpath "$BASE_BIN")" 18083 base; base_pid=$epid; base_token=$token
  ab_rps() { # url conns [header]
    local args=()
    if [ -n "${3:-}" ]; then args=(-H "$3"); fi
    wrk -t"$THREADS" -c"$2" -d"$DURATION" "${args[@]}" "$1" | awk '/Requests\/sec/ {print $2}'
  }
  for c in ${AB_CONNS:-64 256}; do
    for route in ${AB_ROUTES:-/health /api/auth/me}; do
      ratios=()
      for round in $(seq "${AB_ROUNDS:-5}"); do
        if [ "$route" = /health ]; then nh=; bh=; else
          nh="Authorization: Bearer $new_token"; bh="Authorization: Bearer $base_token"; fi
        # Alternate which goes first, so a drift in machine load hits both alike.
        if [ $((round % 2)) = 1 ]; then
          n=$(ab_rps "http://127.0.0.1:18080$route" "$c" "$nh"); b=$(ab_rps "http://127.0.0.1:18083$route" "$c" "$bh")
        else
          b=$(ab_rps "http://127.0.0.1:18083$route" "$c" "$bh"); n=$(ab_rps "http://127.0.0.1:18080$route" "$c" "$nh")
        fi
        r=$(awk -v n="$n" -v b="$b" 'BEGIN {printf "%.3f", n / b}')
        ratios+=("$r")
        echo "$route $c conns, round $round: new $n req/s, base $b req/s, new/base $r (load $(cut -d' ' -f1 /proc/loadavg))"
      done
      echo "$route $c conns: mean new/base $(printf '%s\n' "${ratios[@]}" | awk '{s += $1} END {printf "%.3f", s / NR}')"
    done
  done
  echo "peak RSS new $(peak_rss_mib "$new_pid") MiB, base $(peak_rss_mib "$base_pid") MiB"
  echo "machine load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
  exit 0
fi

echo "== elior serve ($(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
start_elior "$bin" 18080 elior
for c in 64 256; do
  run_wrk "elior /health" http://127.0.0.1:18080/health "$c"
  run_wrk "elior /api/auth/me" http://127.0.0.1:18080/api/auth/me "$c" "Authorization: Bearer $token"
done
echo "peak RSS $(peak_rss_mib "$epid") MiB"

echo "== bare axum hello"
target/release/examples/hello 127.0.0.1:18081 & hpid=$!; pids+=("$hpid")
wait_200 "$(date +%s%N)" http://127.0.0.1:18081/health >/dev/null
for c in 64 256; do run_wrk "axum hello /health" http://127.0.0.1:18081/health "$c"; done

ab_rounds=${AB_ROUNDS:-0}
if [ "$ab_rounds" -gt 0 ]; then
  echo "== /health, elior vs bare axum hello, alternating rounds"
  rps() { wrk -t"$THREADS" -c"$2" -d"$DURATION" "$1" | awk '/Requests\/sec/ {print $2}'; }
  for c in 64 256; do
    for round in $(seq "$ab_rounds"); do
      e=$(rps http://127.0.0.1:18080/health "$c")
      h=$(rps http://127.0.0.1:18081/health "$c")
      echo "$c conns, round $round: elior $e req/s, hello $h req/s, ratio $(awk -v e="$e" -v h="$h" 'BEGIN {printf "%.2f", e / h}')"
    done
  done
fi

if [ "${REFERENCE:-0}" = 1 ]; then
  venv=${REF_VENV:-/tmp/refvenv}
  echo "== FastAPI reference (uvicorn, 4 workers, uvloop, httptools)"
  mkdir -p "$work/ref"
  cp examples/reference/app.py "$work/ref/"
  start=$(date +%s%N)
  (cd "$work/ref" && exec "$venv/bin/uvicorn" app:app --host 127.0.0.1 --port 18082 --workers 4 \
    --loop uvloop --http httptools --log-level warning 2>"$work/ref.log") &
  rpid=$!; pids+=("$rpid")
  echo "first 200 after $(wait_200 "$start" http://127.0.0.1:18082/health) ms"
  rtoken=$(cd "$work/ref" && "$venv/bin/python" app.py)
  for c in 64 256; do
    run_wrk "fastapi /health" http://127.0.0.1:18082/health "$c"
    run_wrk "fastapi /api/auth/me" http://127.0.0.1:18082/api/auth/me "$c" "Authorization: Bearer $rtoken"
  done
  children=$(pgrep -P "$rpid" | tr '\n' ' ')
  # shellcheck disable=SC2086
  echo "peak RSS $(peak_rss_mib "$rpid" $children) MiB (master + workers)"
fi
