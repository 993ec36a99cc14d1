#!/usr/bin/env bash
# Load benchmark for `elior serve` (run on demand, never in the test suite).
#
#   examples/load_bench.sh            # elior + bare axum hello
#   REFERENCE=1 examples/load_bench.sh  # also the FastAPI reference (needs a venv, see below)
#   AB_ROUNDS=5 examples/load_bench.sh  # also N rounds alternating elior's and the hello's
#                                       # /health, each round's ratio (both see the same load)
#   BIN=new/elior BASE_BIN=old/elior AB_ROUNDS=5 examples/load_bench.sh
#                                       # before/after: two elior builds (same profile), N
#                                       # rounds of /health and /api/auth/me on each, every
#                                       # round's new/old ratio and the mean; no cargo build,
#                                       # no hello (AB_CONNS="64", AB_ROUTES="/api/auth/me"
#                                       # narrow it). Build both with one profile, e.g.
#                                       # --config 'profile.bench-fast.inherits="release"'
#                                       # --config 'profile.bench-fast.lto="thin"'.
#                                       # BIN=BASE_BIN=same gives the script's own bias (~1.0);
#                                       # NEW_ENV="K=V ..." adds environment to the new one
#                                       # only, to measure a setting with one binary.
#
# Before/after rounds are unbiased by slot: each round starts both servers afresh on ports
# the kernel picks (--bind 127.0.0.1:0), and alternates which binary starts first (odd
# rounds: new) and, independently, which is loaded first (rounds 1, 2, 5, 6...: new). With
# both servers started once, the first-started one lost every round whichever binary it
# was, so the ratio measured the slot as much as the build.
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

wait_200() { # start_ns url -> prints ms until the first 200 (gives up after 30 s)
  local start=$1 url=$2
  local code
  until code=$(curl -s -o /dev/null -w '%{http_code}' "$url"); [ "$code" = 200 ]; do
    if [ $(( $(date +%s%N) - start )) -gt 30000000000 ]; then
      echo "load_bench: no 200 from $url within 30 s (last answer: HTTP $code)" >&2; exit 1
    fi
    sleep 0.005
  done
  echo $(( ($(date +%s%N) - start) / 1000000 ))
}

free_port() { # a port nothing listens on now (for servers that cannot bind port 0 and say so)
  local p
  while :; do
    p=$(( 20000 + RANDOM % 12000 ))
    if [ -z "$(ss -Htln "sport = :$p")" ]; then echo "$p"; return; fi
  done
}

listening_port() { # pid log -> the port `elior serve --bind 127.0.0.1:0` logged it listens on
  local pid=$1 log=$2 deadline=$(( $(date +%s) + 30 )) port
  until port=$(grep -o 'listening on http://127.0.0.1:[0-9]*' "$log" 2>/dev/null | grep -o '[0-9]*$'); do
    if ! kill -0 "$pid" 2>/dev/null || [ "$(date +%s)" -gt "$deadline" ]; then
      echo "load_bench: elior did not start listening; its log:" >&2; cat "$log" >&2; exit 1
    fi
    sleep 0.005
  done
  echo "$port"
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

start_elior() { # binary name [K=V...] -> sets epid, eport and token
  local binary=$1 name=$2
  shift 2
  rm -rf "${work:?}/$name"; mkdir -p "$work/$name"
  start=$(date +%s%N)
  # The API image sets the same glibc tuning (src/docker/image.rs, MALLOC_ENV), and LOG_LEVEL=info
  # is the default and what deploy sets (a log span for every API request). Port 0: the
  # kernel picks a free port, read back from the log; no clash with anything else running.
  (cd "$work/$name" && exec env -i JWT_SECRET=bench-secret-bench-secret-bench-secret LOG_LEVEL=info \
    MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=131072 "$@" \
    "$binary" serve --bind 127.0.0.1:0 2>"$work/$name.log") &
  epid=$!; pids+=("$epid")
  eport=$(listening_port "$epid" "$work/$name.log")
  echo "$name: first 200 after $(wait_200 "$start" "http://127.0.0.1:$eport/health") ms (port $eport)"
  curl -s -o /dev/null -X POST "http://127.0.0.1:$eport/api/auth/register" -H 'content-type: application/json' \
    -d '{"username":"bench","email":"bench@example.com","password":"bench-password","full_name":"Bench"}'
  token=$(curl -s -X POST "http://127.0.0.1:$eport/api/auth/login" -H 'content-type: application/json' \
    -d '{"username":"bench","password":"bench-password"}' | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
}

stop_elior() { # pid: SIGTERM and wait, so the next round starts on an idle machine
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

bin=$(realpath "$bin")
if [ -n "${BASE_BIN:-}" ]; then
  base_bin=$(realpath "$BASE_BIN")
  read -r -a new_env <<<"${NEW_ENV:-}"
  echo "== before/after: $base_bin (base) vs $bin (new${NEW_ENV:+ with $NEW_ENV}), fresh servers every round"
  ab_rps() { # url conns [header]
    local args=()
    if [ -n "${3:-}" ]; then args=(-H "$3"); fi
    wrk -t"$THREADS" -c"$2" -d"$DURATION" "${args[@]}" "$1" | awk '/Requests\/sec/ {print $2}'
  }
  for c in ${AB_CONNS:-64 256}; do
    for route in ${AB_ROUTES:-/health /api/auth/me}; do
      ratios=()
      for round in $(seq "${AB_ROUNDS:-5}"); do
        # Which binary starts first and which is loaded first alternate independently, so
        # over four rounds each binary holds each slot of each as often as the other.
        if [ $((round % 2)) = 1 ]; then
          start_first=new
          start_elior "$bin" new "${new_env[@]}"; new_pid=$epid; new_port=$eport; new_token=$token
          start_elior "$base_bin" base; base_pid=$epid; base_port=$eport; base_token=$token
        else
          start_first=base
          start_elior "$base_bin" base; base_pid=$epid; base_port=$eport; base_token=$token
          start_elior "$bin" new "${new_env[@]}"; new_pid=$epid; new_port=$eport; new_token=$token
        fi
        if [ "$route" = /health ]; then nh=; bh=; else
          nh="Authorization: Bearer $new_token"; bh="Authorization: Bearer $base_token"; fi
        if [ $(((round - 1) / 2 % 2)) = 0 ]; then
          load_first=new
          n=$(ab_rps "http://127.0.0.1:$new_port$route" "$c" "$nh"); b=$(ab_rps "http://127.0.0.1:$base_port$route" "$c" "$bh")
        else
          load_first=base
          b=$(ab_rps "http://127.0.0.1:$base_port$route" "$c" "$bh"); n=$(ab_rps "http://127.0.0.1:$new_port$route" "$c" "$nh")
        fi
        r=$(awk -v n="$n" -v b="$b" 'BEGIN {printf "%.3f", n / b}')
        ratios+=("$r")
        echo "$route $c conns, round $round (started first: $start_first, loaded first: $load_first): new $n req/s, base $b req/s, new/base $r; peak RSS new $(peak_rss_mib "$new_pid") MiB, base $(peak_rss_mib "$base_pid") MiB (load $(cut -d' ' -f1 /proc/loadavg))"
        stop_elior "$new_pid"; stop_elior "$base_pid"
      done
      echo "$route $c conns: mean new/base $(printf '%s\n' "${ratios[@]}" | awk '{s += $1} END {printf "%.3f", s / NR}')"
    done
  done
  echo "machine load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
  exit 0
fi

echo "== elior serve ($(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
start_elior "$bin" elior
eurl=http://127.0.0.1:$eport
for c in 64 256; do
  run_wrk "elior /health" "$eurl/health" "$c"
  run_wrk "elior /api/auth/me" "$eurl/api/auth/me" "$c" "Authorization: Bearer $token"
done
echo "peak RSS $(peak_rss_mib "$epid") MiB"

echo "== bare axum hello"
hurl=http://127.0.0.1:$(free_port)
target/release/examples/hello "${hurl#http://}" & hpid=$!; pids+=("$hpid")
wait_200 "$(date +%s%N)" "$hurl/health" >/dev/null
for c in 64 256; do run_wrk "axum hello /health" "$hurl/health" "$c"; done

ab_rounds=${AB_ROUNDS:-0}
if [ "$ab_rounds" -gt 0 ]; then
  echo "== /health, elior vs bare axum hello, alternating rounds"
  rps() { wrk -t"$THREADS" -c"$2" -d"$DURATION" "$1" | awk '/Requests\/sec/ {print $2}'; }
  for c in 64 256; do
    for round in $(seq "$ab_rounds"); do
      e=$(rps "$eurl/health" "$c")
      h=$(rps "$hurl/health" "$c")
      echo "$c conns, round $round: elior $e req/s, hello $h req/s, ratio $(awk -v e="$e" -v h="$h" 'BEGIN {printf "%.2f", e / h}')"
    done
  done
fi

if [ "${REFERENCE:-0}" = 1 ]; then
  venv=${REF_VENV:-/tmp/refvenv}
  echo "== FastAPI reference (uvicorn, 4 workers, uvloop, httptools)"
  mkdir -p "$work/ref"
  cp examples/reference/app.py "$work/ref/"
  rport=$(free_port)
  start=$(date +%s%N)
  (cd "$work/ref" && exec "$venv/bin/uvicorn" app:app --host 127.0.0.1 --port "$rport" --workers 4 \
    --loop uvloop --http httptools --log-level warning 2>"$work/ref.log") &
  rpid=$!; pids+=("$rpid")
  echo "first 200 after $(wait_200 "$start" "http://127.0.0.1:$rport/health") ms"
  rtoken=$(cd "$work/ref" && "$venv/bin/python" app.py)
  for c in 64 256; do
    run_wrk "fastapi /health" "http://127.0.0.1:$rport/health" "$c"
    run_wrk "fastapi /api/auth/me" "http://127.0.0.1:$rport/api/auth/me" "$c" "Authorization: Bearer $rtoken"
  done
  children=$(pgrep -P "$rpid" | tr '\n' ' ')
  # shellcheck disable=SC2086
  echo "peak RSS $(peak_rss_mib "$rpid" $children) MiB (master + workers)"
fi
