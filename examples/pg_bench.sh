#!/usr/bin/env bash
# PostgreSQL against SQLite for `elior serve` (issue 16; run on demand, never in the test
# suite):
#
#   examples/pg_bench.sh                 # release build, 10 s per run, 3 alternating rounds
#   BIN=target/debug/elior ROUNDS=1 DURATION=5s examples/pg_bench.sh
#
# Starts a throwaway PostgreSQL cluster (Debian's postgresql 15: initdb into a temp dir as
# the postgres user, a free port, fsync on, removed at exit) and two `elior serve`
# processes, one on a SQLite file and one on that cluster, then loads each with wrk at
# 64 connections (CONNS) on GET /health, an authenticated GET /api/auth/me and a write
# route (POST /api/progress/weight, one row per request), alternating which backend goes
# first in each round so a drift in machine load hits both alike. Prints requests/s, p50
# and p99 per run, each round's PostgreSQL/SQLite ratio, the mean ratio, and the peak RSS
# of both servers (and of the PostgreSQL cluster). Needs wrk, curl and postgresql.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
THREADS=${THREADS:-2}
CONNS=${CONNS:-64}
ROUNDS=${ROUNDS:-3}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
work=$(mktemp -d /tmp/elior-pg-bench-XXXXXX)
pids=()
as_pg=()
[ "$(id -u)" = 0 ] && as_pg=(runuser -u postgres --)
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  "${as_pg[@]}" "$PGBIN/pg_ctl" -D "$work/pg" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

if [ -n "${BIN:-}" ]; then bin=$(realpath "$BIN"); else
  cargo build --release --quiet --bin elior; bin=$(realpath target/release/elior); fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

echo "machine load at start: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores)"
[ "$(id -u)" = 0 ] && chown postgres "$work"
pgport=$(free_port)
echo bench-pg-password >"$work/pw"; chmod 644 "$work/pw"
"${as_pg[@]}" "$PGBIN/initdb" -U postgres -E UTF8 --locale=C.UTF-8 --auth-local=trust \
  --auth-host=scram-sha-256 --pwfile="$work/pw" -D "$work/pg" >/dev/null
"${as_pg[@]}" "$PGBIN/pg_ctl" -D "$work/pg" -l "$work/pg.log" -w start \
  -o "-k $work -p $pgport -c listen_addresses=127.0.0.1 -c max_connections=100" >/dev/null
"${as_pg[@]}" "$PGBIN/psql" -X -q -h "$work" -p "$pgport" -U postgres -c "CREATE DATABASE elior" postgres
pg_url="postgresql://postgres:bench-pg-password@127.0.0.1:$pgport/elior"

peak_rss_mib() { awk '/VmHWM/ {printf "%d", $2 / 1024}' "/proc/$1/status"; }

start_elior() { # name port database_url -> sets epid, token, client_id
  local name=$1 port=$2 url=$3
  mkdir -p "$work/$name"
  (cd "$work/$name" && exec env -i JWT_SECRET=bench-secret-bench-secret-bench-secret LOG_LEVEL=warn \
    MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=131072 DATABASE_URL="$url" \
    "$bin" serve --bind "127.0.0.1:$port" 2>"$work/$name.log") &
  epid=$!; pids+=("$epid")
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health")" = 200 ]; do sleep 0.05; done
  curl -s -o /dev/null -X POST "http://127.0.0.1:$port/api/auth/register" -H 'content-type: application/json' \
    -d '{"username":"bench","email":"bench@example.com","password":"bench-password","full_name":"Bench"}'
  token=$(curl -s -X POST "http://127.0.0.1:$port/api/auth/login" -H 'content-type: application/json' \
    -d '{"username":"bench","password":"bench-password"}' | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
}

sqlite_port=$(free_port); pg_port=$(free_port)
start_elior sqlite "$sqlite_port" "sqlite:///$work/sqlite/elior.db"; sqlite_pid=$epid; sqlite_token=$token
start_elior postgresql "$pg_port" "$pg_url"; pg_pid=$epid; pg_token=$token
curl -s "http://127.0.0.1:$pg_port/health"; echo

cat >"$work/weight.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"date": "2026-01-01", "weight": 80.5}'
LUA

run() { # port route token -> "rps p50 p99 non2xx"
  local port=$1 route=$2 tok=$3 args=() out
  [ "$route" = /health ] || args=(-H "Authorization: Bearer $tok")
  [ "$route" = /api/progress/weight ] && args+=(-s "$work/weight.lua")
  out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "${args[@]}" "http://127.0.0.1:$port$route")
  printf '%s %s %s %s\n' "$(awk '/Requests\/sec/ {print $2}' <<<"$out")" \
    "$(awk '$1=="50%" {print $2}' <<<"$out")" "$(awk '$1=="99%" {print $2}' <<<"$out")" \
    "$(awk '/Non-2xx/ {print $4}' <<<"$out")"
}

for route in /health /api/auth/me /api/progress/weight; do
  ratios=()
  for round in $(seq "$ROUNDS"); do
    if [ $((round % 2)) = 1 ]; then
      s=$(run "$sqlite_port" "$route" "$sqlite_token"); p=$(run "$pg_port" "$route" "$pg_token")
    else
      p=$(run "$pg_port" "$route" "$pg_token"); s=$(run "$sqlite_port" "$route" "$sqlite_token")
    fi
    read -r srps sp50 sp99 serr <<<"$s"; read -r prps pp50 pp99 perr <<<"$p"
    r=$(awk -v p="$prps" -v s="$srps" 'BEGIN {printf "%.2f", p / s}')
    ratios+=("$r")
    printf '%-22s c%s round %s: sqlite %9s req/s p50 %7s p99 %7s %s| postgresql %9s req/s p50 %7s p99 %7s %s| pg/sqlite %s\n' \
      "$route" "$CONNS" "$round" "$srps" "$sp50" "$sp99" "${serr:+non-2xx $serr }" "$prps" "$pp50" "$pp99" "${perr:+non-2xx $perr }" "$r"
  done
  echo "$route c$CONNS: mean pg/sqlite $(printf '%s\n' "${ratios[@]}" | awk '{s += $1} END {printf "%.2f", s / NR}')"
done
pg_rss=$(ps -o rss= -u postgres 2>/dev/null | awk '{s += $1} END {printf "%d", s / 1024}')
echo "peak RSS: elior on sqlite $(peak_rss_mib "$sqlite_pid") MiB, elior on postgresql $(peak_rss_mib "$pg_pid") MiB (PostgreSQL's own processes now: ${pg_rss:-?} MiB)"
echo "machine load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
