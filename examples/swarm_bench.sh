#!/usr/bin/env bash
# Swarm benchmark (issue 21; run on demand, never in the test suite):
#
#   examples/swarm_bench.sh                 # BIN=target/release/elior when built, else debug
#   BIN=target/debug/elior DURATION=10s examples/swarm_bench.sh
#
# On a single-node swarm (made with `docker swarm init --advertise-addr 127.0.0.1` and left
# afterwards when the engine had none; the elior.db node label likewise), with the fixture
# nginx and PostgreSQL images (scripts/build-fixture-images [--postgres]):
#
# 1. deploys a stack with API_REPLICAS=1, 2, 3 and measures GET /health through nginx with
#    wrk (48 keep-alive connections, 2 threads; nginx allows 50 per client address):
#    requests/s and p99, each as a ratio of the 1-replica figure measured in the same run;
# 2. times a rolling update of 3 replicas to a new API image (the same binary plus one
#    byte) while wrk keeps loading /health, and reports wrk's errors and non-2xx answers.
#
# /api/auth/me is not measured through nginx: nginx limits /api/auth/ to 5 requests/s per
# client address (limit_req), so one load generator measures the limit, not the API. On a
# 2-core machine the replicas share the same two cores as nginx and wrk: do not expect
# linear scaling. Needs wrk and curl (Debian packages).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
if [ -z "${BIN:-}" ]; then
  if [ -x target/release/elior ]; then BIN=target/release/elior; else BIN=target/debug/elior; fi
fi
BIN=$(realpath "$BIN")
work=$(mktemp -d)
dir="$work/stack"
domain="swarm-bench-$$.elior.test"
http_port=$((20000 + RANDOM % 10000))
https_port=$((http_port + 1))
created_swarm=
labelled_node=

cleanup() {
  "$BIN" down --purge --dir "$dir" >/dev/null 2>&1 || true
  docker images --format '{{.Repository}}:{{.Tag}}' "elior-swarm-bench-$$" | xargs -r docker rmi >/dev/null 2>&1 || true
  if [ -n "$labelled_node" ] && [ -z "$created_swarm" ]; then
    docker node update --label-rm elior.db "$labelled_node" >/dev/null 2>&1 || true
  fi
  if [ -n "$created_swarm" ]; then docker swarm leave --force >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "machine load at start: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores); $BIN"
if [ "$(docker info --format '{{.Swarm.LocalNodeState}}')" != active ]; then
  docker swarm init --advertise-addr 127.0.0.1 >/dev/null
  created_swarm=1
fi
if ! docker node ls -q | xargs docker node inspect --format '{{ index .Spec.Labels "elior.db" }}' | grep -qx true; then
  labelled_node=$(docker info --format '{{.Swarm.NodeID}}')
  docker node update --label-add elior.db=true "$labelled_node" >/dev/null
fi

nginx_image=$(scripts/build-fixture-images)
postgres_image=$(scripts/build-fixture-images --postgres)
"$BIN" init "$domain" --dir "$dir" >/dev/null
set_env() { # KEY VALUE
  grep -v "^$1=" "$dir/.env.production" >"$work/env" || true
  echo "$1=$2" >>"$work/env"
  cat "$work/env" >"$dir/.env.production"
}
set_env HTTP_PORT "$http_port"
set_env HTTPS_PORT "$https_port"
set_env API_IMAGE "elior-swarm-bench-$$:latest"
set_env PROXY_IMAGE "$nginx_image"
set_env POSTGRES_IMAGE "$postgres_image"
set_env MODE swarm

url="https://127.0.0.1:$https_port/health"
measure() { # -> "rps p99"
  wrk -t2 -c48 -d"$DURATION" --latency -H "Host: $domain" "$url" >"$work/wrk" 2>&1
  rps=$(awk '/^Requests\/sec/ {print $2}' "$work/wrk")
  p99=$(awk '$1 == "99%" {print $2}' "$work/wrk")
  errors=$(awk '/Non-2xx|Socket errors/' "$work/wrk" | tr '\n' ' ')
  echo "$rps $p99 ${errors:-no errors}"
}

base=
for replicas in 1 2 3; do
  set_env API_REPLICAS "$replicas"
  start=$(date +%s.%N)
  "$BIN" deploy "$domain" --dir "$dir" >/dev/null 2>"$work/deploy.log" || { cat "$work/deploy.log"; exit 1; }
  took=$(echo "$(date +%s.%N) - $start" | bc)
  read -r rps p99 errors < <(measure)
  base=${base:-$rps}
  printf 'replicas=%d  deploy %.1fs  /health %8.0f req/s (x%.2f of 1 replica)  p99 %s  %s\n' \
    "$replicas" "$took" "$rps" "$(echo "$rps / $base" | bc -l)" "$p99" "$errors"
done

cp "$BIN" "$work/elior-next"
echo >>"$work/elior-next"
wrk -t2 -c48 -d120s --latency -H "Host: $domain" "$url" >"$work/wrk-update" 2>&1 &
wrk_pid=$!
start=$(date +%s.%N)
"$work/elior-next" update --dir "$dir" >/dev/null 2>"$work/update.log" || { cat "$work/update.log"; exit 1; }
took=$(echo "$(date +%s.%N) - $start" | bc)
kill -INT "$wrk_pid" 2>/dev/null || true
wait "$wrk_pid" 2>/dev/null || true
errors=$(awk '/Non-2xx|Socket errors/' "$work/wrk-update" | tr '\n' ' ')
printf 'rolling update of 3 replicas: %.1fs; under load: %s req/s, %s\n' "$took" \
  "$(awk '/^Requests\/sec/ {print $2}' "$work/wrk-update")" "${errors:-no errors or non-2xx answers}"
