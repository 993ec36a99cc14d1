#!/usr/bin/env bash
# Benchmark of the trade-off in templates/nginx.conf.j2 (run on demand, never in the suite):
# the rendered config resolves the API per request (`set $elior_api api:8000;
# proxy_pass http://$elior_api;`), which in nginx 1.22 means a new upstream connection
# per request; the alternative is an `upstream {}` block with `keepalive`, which nginx
# resolves once at start (and refuses to start without the API). Three variants:
#   rendered       the rendered config, with net.ipv4.tcp_tw_reuse=1 as the compose file sets
#   no-tw-reuse    the rendered config without that sysctl (closed connections pile up)
#   keepalive      the reference: an upstream block with keepalive 32
#
#   examples/nginx_upstream_bench.sh     # DURATION=10s CONNS=64 by default
#
# Runs both configs in the fixture nginx image against a stand-in API (nginx answering
# a small JSON body on :8000) on one Docker network, and prints wrk's requests/s and
# latency for GET /health through each, then the ratio. Needs wrk, curl, openssl, Docker.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
tag=bench-$$
work=$(mktemp -d)
cleanup() {
  docker rm -f "$tag-api" "$tag-rendered" "$tag-no-tw-reuse" "$tag-keepalive" >/dev/null 2>&1 || true
  docker network rm "$tag" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

image=$(scripts/build-fixture-images)
cargo build --quiet --bin elior
target/debug/elior init example.com --dir "$work/stack" >/dev/null 2>&1
target/debug/elior render --dir "$work/stack" >/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj /CN=example.com -keyout "$work/stack/nginx/ssl/key.pem" \
  -out "$work/stack/nginx/ssl/cert.pem" 2>/dev/null

# The alternative: the same config, with the variable naming an upstream block.
mkdir "$work/keepalive" && cp -r "$work/stack/nginx/ssl" "$work/keepalive/"
awk 'BEGIN{done=0} /^    server \{/ && !done {print "    upstream elior_api_pool { server api:8000; keepalive 32; }\n"; done=1} {print}' \
  "$work/stack/nginx/nginx.conf" | sed 's|set $elior_api api:8000;|set $elior_api elior_api_pool;|' >"$work/keepalive/nginx.conf"

mkdir "$work/api"
cat >"$work/api/nginx.conf" <<'CONF'
worker_processes 1;
events {}
http { access_log off; server { listen 8000; keepalive_requests 100000;
  location / { default_type application/json; return 200 '{"status":"healthy"}'; } } }
CONF

docker network create --label elior.test=1 "$tag" >/dev/null
docker run -d --name "$tag-api" --label elior.test=1 --network "$tag" --network-alias api \
  -v "$work/api:/etc/fake:ro" "$image" nginx -c /etc/fake/nginx.conf -g 'daemon off;' >/dev/null
for variant in rendered no-tw-reuse keepalive; do
  conf_dir="$work/stack/nginx"; [ "$variant" = keepalive ] && conf_dir="$work/keepalive"
  sysctl=(--sysctl net.ipv4.tcp_tw_reuse=1); [ "$variant" = no-tw-reuse ] && sysctl=()
  docker run -d "${sysctl[@]}" --name "$tag-$variant" --label elior.test=1 --network "$tag" -p 127.0.0.1::443 \
    -v "$conf_dir:/etc/nginx/elior:ro" -v "$work/stack/uploads:/srv/elior/uploads:ro" \
    -v "$work/stack/frontend:/srv/elior/frontend:ro" \
    "$image" nginx -c /etc/nginx/elior/nginx.conf -g 'daemon off;' >/dev/null
done

declare -A rps
for variant in rendered no-tw-reuse keepalive; do
  port=$(docker port "$tag-$variant" 443/tcp | head -1 | sed 's/.*://')
  url="https://127.0.0.1:$port/health"
  until [ "$(curl -sk -o /dev/null -w '%{http_code}' "$url")" = 200 ]; do sleep 0.2; done
  wrk -t2 -c"$CONNS" -d2s "$url" >/dev/null # warm-up
  out=$(wrk -t2 -c"$CONNS" -d"$DURATION" --latency "$url")
  rps[$variant]=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out"); p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  printf '%-12s %10s req/s   p50 %8s   p99 %8s\n' "$variant" "${rps[$variant]}" "$p50" "$p99"
done
awk -v a="${rps[rendered]}" -v n="${rps[no-tw-reuse]}" -v b="${rps[keepalive]}" \
  'BEGIN { printf "throughput vs keepalive: rendered %.2f, no-tw-reuse %.2f\n", a / b, n / b }'
