#!/usr/bin/env bash
# Soak test: runs `petrel serve` (durable, STARTTLS, delivering to its
# Maildirs) under a steady load from `petrel bench --rate` and samples the
# server's resident memory, thread count, open files and queue length
# every 10 seconds, to show that nothing grows without bound.
#
#   scripts/soak.sh                       # 10 minutes at 200 messages/s
#   DURATION=2m RATE=500 scripts/soak.sh  # other settings
#
# Writes soak-<date>.csv in the current directory and prints a summary:
# memory in the first and last minute, and the maximum. Not part of
# scripts/test.sh (it takes minutes); BENCHMARKS.md has the last result.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

DURATION="${DURATION:-10m}"
RATE="${RATE:-200}"
CONNS="${CONNS:-8}"
PORT="${PORT:-3599}"

work=$(mktemp -d /tmp/petrel-soak.XXXXXX)
csv="soak-$(date -u +%Y%m%dT%H%M%SZ).csv"
cleanup() {
	[ -n "${server:-}" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

go build -o "$work/petrel" ./cmd/petrel
cat >"$work/petrel.toml" <<EOF
[listeners]
mx = "127.0.0.1:$PORT"
submission = ""
submissions = ""
[local]
recipients = "any"
[limits]
max_connections_per_ip = 1000
EOF
"$work/petrel" serve --config "$work/petrel.toml" --data "$work/data" --domain localhost >"$work/serve.log" 2>&1 &
server=$!
for _ in $(seq 50); do
	grep -q "petrel: delivering mail" "$work/serve.log" && break
	sleep 0.1
done
grep -q "petrel: delivering mail" "$work/serve.log" || { echo "soak: petrel serve did not start:"; cat "$work/serve.log"; exit 1; }

echo "seconds,rss_kib,threads,fds,queued" >"$csv"
sample() {
	local rss threads fds queued
	rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$server/status")
	threads=$(awk '/^Threads:/ {print $2}' "/proc/$server/status")
	fds=$(ls "/proc/$server/fd" | wc -l)
	queued=$(find "$work/data/queue/msg" -name '*.json' 2>/dev/null | wc -l)
	echo "$1,$rss,$threads,$fds,$queued" >>"$csv"
}

start=$(date +%s)
"$work/petrel" bench --server "127.0.0.1:$PORT" --starttls --pipelining --conns "$CONNS" \
	--msgs-per-conn 100 --rate "$RATE" --duration "$DURATION" --progress 0 >"$work/bench.txt" 2>&1 &
bench=$!
while kill -0 "$bench" 2>/dev/null; do
	sample $(($(date +%s) - start))
	sleep 10
done
wait "$bench" || true
sample $(($(date +%s) - start))

cat "$work/bench.txt"
echo
echo "samples: $csv"
awk -F, 'NR > 1 {
	n++; t[n] = $1; r[n] = $2; if ($2 > max) max = $2
}
END {
	first = 0; fc = 0; last = 0; lc = 0
	for (i = 1; i <= n; i++) {
		if (t[i] >= 60 && t[i] < 120) { first += r[i]; fc++ }
		if (t[i] >= t[n] - 60) { last += r[i]; lc++ }
	}
	if (fc == 0) { first = r[1]; fc = 1 }
	printf "rss: second minute %.0f KiB, last minute %.0f KiB, max %d KiB (%+.1f%%)\n",
		first / fc, last / lc, max, (last / lc - first / fc) * 100 / (first / fc)
}' "$csv"
