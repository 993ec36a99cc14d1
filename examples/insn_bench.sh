#!/usr/bin/env bash
# CPU instructions per request of `elior serve` (issue 19), run on demand, never in the
# test suite. Counts, not seconds: on a shared 2-core host wall-clock rates vary by ±15%,
# while the instructions a request costs are the same from run to run within a fraction
# of a percent, so two builds compare in one run each.
#
#   examples/insn_bench.sh BIN [BIN2 ...]     # each binary in turn, same inputs
#   N=2000 WARMUP=200 examples/insn_bench.sh target/bench-fast/elior
#   ANNOTATE=1 examples/insn_bench.sh BIN     # also callgrind_annotate --inclusive=yes
#   LOG_FORMAT=json ...                       # production's JSON log lines (ENVIRONMENT=production)
#
# For each binary: starts it under `valgrind --tool=callgrind` on a fresh SQLite database
# (LOG_LEVEL=info, the malloc tuning of the API image, as load_bench.sh and serve_load
# run it), registers and logs in a client, sends WARMUP requests of each kind (pool
# connections, prepared statements and route series get made), then for each kind zeroes
# the counters, sends N requests over one keep-alive connection (curl) and dumps. The
# instructions of a dump, all threads, divided by N is the figure; an idle dump of the
# same wall time as the last kind shows what background tasks add (should be ~0).
# Needs valgrind and curl (Debian packages). Builds: use one profile for every binary, e.g.
#   cargo build --config 'profile.bench-fast.inherits="release"' \
#     --config 'profile.bench-fast.lto="thin"' --profile bench-fast --bin elior
# The release profile strips symbols: for function names in the annotated profiles, add
# --config 'profile.bench-fast.strip=false' to both builds (the counts do not change).
set -euo pipefail
[ $# -ge 1 ] || { sed -n 2,12p "$0"; exit 2; }
N=${N:-2000}
WARMUP=${WARMUP:-200}
work=$(mktemp -d)
vpid=
cleanup() { if [ -n "$vpid" ]; then kill "$vpid" 2>/dev/null || true; fi; rm -rf "$work"; }
trap cleanup EXIT

# One curl process, one keep-alive connection, $count requests: a config file of URLs.
send() { # count url method [data] -> prints "status count" lines
  local count=$1 url=$2 method=$3 data=${4:-}
  local cfg=$work/curl.cfg
  : >"$cfg"
  for _ in $(seq "$count"); do
    printf 'url = "%s"\noutput = "/dev/null"\n' "$url" >>"$cfg"
  done
  local args=(-s -K "$cfg" -X "$method" -H "Authorization: Bearer $token" -w '%{http_code}\n')
  if [ -n "$data" ]; then args+=(-H 'content-type: application/json' -d "$data"); fi
  curl "${args[@]}" | sort | uniq -c | awk '{printf "%s×%s ", $2, $1}'
}

total_ir() { # callgrind output file -> total instructions
  awk '/^(summary|totals):/ {print $2; exit}' "$1"
}

for bin in "$@"; do
  bin=$(realpath "$bin")
  name=$(basename "$(dirname "$bin")")/$(basename "$bin")
  dir=$work/run; rm -rf "$dir"; mkdir -p "$dir"
  port=$((20000 + RANDOM % 20000))
  extra=()
  if [ "${LOG_FORMAT:-}" = json ]; then extra=(ENVIRONMENT=production); fi
  (cd "$dir" && exec env -i PATH="$PATH" JWT_SECRET=bench-secret-bench-secret-bench-secret \
    LOG_LEVEL=info MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=131072 "${extra[@]}" \
    valgrind --tool=callgrind --callgrind-out-file="$dir/cg.%p" --dump-instr=no \
    --collect-atstart=yes "$bin" serve --bind "127.0.0.1:$port" 2>"$dir/server.log") &
  vpid=$!
  deadline=$((SECONDS + 120))
  until curl -sf -o /dev/null "http://127.0.0.1:$port/health"; do
    [ $SECONDS -lt $deadline ] || { tail "$dir/server.log"; exit 1; }
    sleep 0.2
  done
  base=http://127.0.0.1:$port
  curl -sf -o /dev/null -X POST "$base/api/auth/register" -H 'content-type: application/json' \
    -d '{"username":"bench","email":"bench@example.com","password":"bench-password","full_name":"Bench"}'
  token=$(curl -sf -X POST "$base/api/auth/login" -H 'content-type: application/json' \
    -d '{"username":"bench","password":"bench-password"}' | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
  weight='{"date":"2026-01-02","weight":81.5,"notes":"after the run"}'
  echo "== $name ($N requests per kind, $WARMUP warm-up)"
  echo "warm-up: POST $(send "$WARMUP" "$base/api/progress/weight" POST "$weight")" \
    "me $(send "$WARMUP" "$base/api/auth/me" GET)"
  kinds=("POST /api/progress/weight" "GET /api/auth/me" "GET /api/progress/weight" "GET /health")
  for kind in "${kinds[@]}" idle; do
    callgrind_control --zero "$vpid" >/dev/null 2>&1
    t0=$(date +%s%N)
    case $kind in
      POST*) statuses=$(send "$N" "$base/api/progress/weight" POST "$weight") ;;
      "GET /api/auth/me") statuses=$(send "$N" "$base/api/auth/me" GET) ;;
      # A page of 20 of the entries the POSTs made, as serve_load's weight lists read.
      "GET /api/progress/weight") statuses=$(send "$N" "$base/api/progress/weight?limit=20" GET) ;;
      "GET /health") statuses=$(send "$N" "$base/health" GET) ;;
      idle) sleep "$(awk -v ns="$last_ns" 'BEGIN {print ns / 1e9}')"; statuses=- ;;
    esac
    last_ns=$(( $(date +%s%N) - t0 ))
    callgrind_control --dump="$kind" "$vpid" >/dev/null 2>&1
    # The newest dump file is this kind's.
    out=$(ls -t "$dir"/cg.*.* 2>/dev/null | head -1)
    ir=$(total_ir "$out")
    printf '%-28s %12s instructions  %8s per request  %s\n' "$kind" "$ir" \
      "$(awk -v ir="$ir" -v n="$N" 'BEGIN {printf "%.0f", ir / n}')" "$statuses"
    if [ "${ANNOTATE:-0}" = 1 ] && [ "$kind" != idle ]; then
      keep=${ANNOTATE_DIR:-/tmp}/insn_$(basename "$bin")_${kind//[^a-z]/_}.cg
      cp "$out" "$keep"
      echo "  kept $keep (callgrind_annotate --inclusive=yes $keep)"
    fi
  done
  kill "$vpid"; wait "$vpid" 2>/dev/null || true; vpid=
done
