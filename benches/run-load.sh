#!/usr/bin/env bash
# One load run against a fresh pass-through gateway (see benches/README.md).
# Usage: [CONCURRENCY=4] [SPANS_PER_REQUEST=500] benches/run-load.sh grpc|http [duration]
#   (from the workspace root, after
#   cargo build --release -p meshgate -p meshgate-loadgen)
# Gateway pinned to core 0, sink + loadgen to core 1, all at nice -15 (needs root) so that
# other work on the machine (e.g. a cargo build) disturbs the numbers less.
set -euo pipefail
proto=${1:-grpc}
dur=${2:-15s}
bin=${MESHGATE_BIN_DIR:-target/release}
out=${OUT_DIR:-/tmp/meshgate-load}
mkdir -p "$out"
nice_cmd=(nice -n -15)
[ "$(id -u)" = 0 ] || nice_cmd=()

"${nice_cmd[@]}" taskset -c 1 "$bin/meshgate" run -c benches/configs/sink.yaml >"$out/sink.out" 2>"$out/sink.err" &
sink=$!
"${nice_cmd[@]}" taskset -c 0 "$bin/meshgate" run -c benches/configs/passthrough.yaml >"$out/gw.out" 2>"$out/gw.err" &
gw=$!
trap 'kill $gw $sink 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  curl -sf 127.0.0.1:13134/readyz >/dev/null && curl -sf 127.0.0.1:13135/readyz >/dev/null && break
  sleep 0.2
done

cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
g0=$(cpu $gw); s0=$(cpu $sink)
if [ "$proto" = grpc ]; then ep=127.0.0.1:14317; else ep=http://127.0.0.1:14318; fi
"${nice_cmd[@]}" taskset -c 1 /usr/bin/time -f "loadgen cpu %Us user %Ss sys" -o "$out/$proto.loadgen.cpu" \
  "$bin/meshgate-loadgen" --protocol "$proto" --endpoint "$ep" \
  --duration "$dur" --concurrency "${CONCURRENCY:-4}" --spans-per-request "${SPANS_PER_REQUEST:-500}" | tee "$out/$proto.json"
sleep 2  # let the batch timeout flush and the exporter drain
g1=$(cpu $gw); s1=$(cpu $sink)
tick=$(getconf CLK_TCK)
awk -v g=$((g1 - g0)) -v s=$((s1 - s0)) -v t="$tick" \
  'BEGIN { printf "gateway cpu %.2fs, sink cpu %.2fs\n", g / t, s / t }' | tee "$out/$proto.cpu"
cat "$out/$proto.loadgen.cpu"
curl -s 127.0.0.1:13134/metrics >"$out/$proto.gateway.metrics"
curl -s 127.0.0.1:13135/metrics >"$out/$proto.sink.metrics"
grep -E '^meshgate_(receiver_(accepted|refused)|exporter_(sent|dropped|send_failures)|pipeline_items)' \
  "$out/$proto.gateway.metrics" | grep -v ' 0$' || true
echo "sink received:"
grep -E '^meshgate_receiver_accepted_items_total' "$out/$proto.sink.metrics" | grep -v ' 0$' || true
