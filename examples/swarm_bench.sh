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
# 3. measures GET /api/auth/me (a valid bearer token: JWT check and a user read from
#    PostgreSQL) at the API tasks DIRECTLY, one wrk per task at the task's address on
#    docker_gwbridge (reachable from the node itself; no port is published), 48 connections
#    split between the tasks; summed requests/s as a ratio of 1 replica. Not through nginx:
#    nginx limits /api/auth/ to 5 requests/s per client address (limit_req), so one load
#    generator would measure the limit, not the API.
#
# On a 2-core machine the replicas share the same two cores as nginx and wrk: do not expect
# linear scaling. Needs wrk, curl and jq (Debian packages).
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

# A user and a token for /api/auth/me (through nginx once, within its limit).
token=
auth_header() {
  if [ -z "$token" ]; then
    local body='{"username":"bench_user","email":"bench@example.com","password":"correct-horse-battery","full_name":"Bench"}'
    curl -sk --resolve "$domain:$https_port:127.0.0.1" -H 'Content-Type: application/json' \
      -d "$body" "https://$domain:$https_port/api/auth/register" >/dev/null
    token=$(curl -sk --resolve "$domain:$https_port:127.0.0.1" -H 'Content-Type: application/json' \
      -d '{"username":"bench_user","password":"correct-horse-battery"}' \
      "https://$domain:$https_port/api/auth/login" | jq -r .access_token)
  fi
  echo "Authorization: Bearer $token"
}
measure_me() { # REPLICAS -> "summed rps, non-2xx/errors"
  local header ids i=0 total=0 bad=""
  header=$(auth_header)
  # The running API task containers of this stack (its project name holds the domain's).
  mapfile -t ids < <(docker ps --filter label=com.docker.swarm.service.name \
    --format '{{.ID}} {{.Label "com.docker.swarm.service.name"}}' |
    awk -v d="swarm-bench-$$" 'index($2, d) && $2 ~ /-api$/ {print $1}')
  local per=$((48 / ${#ids[@]}))
  for container in "${ids[@]}"; do
    # A task's docker_gwbridge endpoint is listed by the bridge, not by the container.
    full=$(docker inspect -f '{{.Id}}' "$container")
    ip=$(docker network inspect docker_gwbridge | jq -r --arg c "$full" '.[0].Containers[$c].IPv4Address' | cut -d/ -f1)
    wrk -t1 -c"$per" -d"$DURATION" -H "$header" "http://$ip:8000/api/auth/me" >"$work/wrk-me-$i" 2>&1 &
    i=$((i + 1))
  done
  wait
  for f in "$work"/wrk-me-*; do
    total=$(echo "$total + $(awk '/^Requests\/sec/ {print $2}' "$f")" | bc -l)
    bad="$bad$(awk '/Non-2xx|Socket errors/' "$f" | tr '\n' ' ')"
    rm -f "$f"
  done
  echo "$total ${bad:-no-errors}"
}

base=
me_base=
for replicas in 1 2 3; do
  set_env API_REPLICAS "$replicas"
  start=$(date +%s.%N)
  "$BIN" deploy "$domain" --dir "$dir" >/dev/null 2>"$work/deploy.log" || { cat "$work/deploy.log"; exit 1; }
  took=$(echo "$(date +%s.%N) - $start" | bc)
  read -r rps p99 errors < <(measure)
  base=${base:-$rps}
  printf 'replicas=%d  deploy %.1fs  /health %8.0f req/s (x%.2f of 1 replica)  p99 %s  %s\n' \
    "$replicas" "$took" "$rps" "$(echo "$rps / $base" | bc -l)" "$p99" "$errors"
  read -r me_rps me_errors < <(measure_me)
  me_base=${me_base:-$me_rps}
  printf 'replicas=%d  /api/auth/me at the tasks %8.0f req/s (x%.2f of 1 replica)  %s\n' \
    "$replicas" "$me_rps" "$(echo "$me_rps / $me_base" | bc -l)" "$me_errors"
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
