#!/usr/bin/env bash
# Upload limits benchmark for `elior serve` (issue 15; run on demand, never in the suite).
#
#   examples/upload_bench.sh                    # builds the release binary first
#   BIN=path/to/elior examples/upload_bench.sh  # any build
#
# Sends 4 concurrent uploads of a 12000x12000 PNG (a few KB compressed, ~410 MiB to
# decode) and prints each answer with its time, then the server's peak RSS (VmHWM) next
# to its RSS before the uploads. The pixel limit (40 megapixels) refuses each from its
# header, so the peak must stay far below 100 MiB. Needs curl and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

if [ -n "${BIN:-}" ]; then bin=$(realpath "$BIN"); else
  cargo build --release --quiet --bin elior; bin=$(realpath target/release/elior); fi
port=${PORT:-18090}

python3 - "$work/bomb.png" <<'PY'
import struct, sys, zlib
w = h = 12000
row = b"\0" * (1 + (w + 7) // 8)
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
z = zlib.compressobj(1)
idat = b"".join(z.compress(row) for _ in range(h)) + z.flush()
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)) \
    + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
open(sys.argv[1], "wb").write(png)
PY
echo "bomb.png: $(stat -c %s "$work/bomb.png") bytes, 12000x12000 pixels"

(cd "$work" && exec env -i JWT_SECRET=bench-secret-bench-secret-bench-secret LOG_LEVEL=warn \
  MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=131072 "$bin" serve --bind "127.0.0.1:$port" 2>"$work/serve.log") &
pid=$!
until curl -sf -o /dev/null "http://127.0.0.1:$port/health"; do sleep 0.05; done
curl -s -o /dev/null -X POST "http://127.0.0.1:$port/api/auth/register" -H 'content-type: application/json' \
  -d '{"username":"bench","email":"bench@example.com","password":"bench-password","full_name":"Bench"}'
token=$(curl -s -X POST "http://127.0.0.1:$port/api/auth/login" -H 'content-type: application/json' \
  -d '{"username":"bench","password":"bench-password"}' | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
rss() { awk -v k="$1" '$1 == k":" {print int($2 / 1024)}' "/proc/$pid/status"; }
echo "RSS before: $(rss VmRSS) MiB"
for i in 1 2 3 4; do
  curl -s -o "$work/answer$i" -w "upload $i: %{http_code} in %{time_total} s\n" \
    -H "Authorization: Bearer $token" -F "file=@$work/bomb.png;type=image/png" \
    "http://127.0.0.1:$port/api/files/upload/progress_photos" &
done
wait $(jobs -p | grep -v "^$pid$") 2>/dev/null || true
echo "answer: $(cat "$work/answer1")"
echo "peak RSS (VmHWM): $(rss VmHWM) MiB; now $(rss VmRSS) MiB"
