#!/usr/bin/env bash
# bench.sh [NAME...]: BenchmarkUDPHookCost (tracer/bench_test.go) on each
# kernel of the matrix under QEMU (default: 5.10 and 6.1, where the UDP
# fexit and kprobe fallbacks both run), and each hook's cost as a ratio to
# the kprobes'. Under TCG absolute times mean nothing; the ratios between
# variants measured in the same guest do (BENCHMARKS.md).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
[ "$(id -u)" = 0 ] || { echo "bench.sh: needs root (it boots kernels and loads BPF programs)" >&2; exit 1; }
[ $# -gt 0 ] || set -- 5.10 6.1
payload=$(mktemp -d)
trap 'rm -rf "$payload"' EXIT
(cd "$repo" && CGO_ENABLED=0 go test -c -o "$payload/tracer.test" ./tracer)
cat >"$payload/bench.sh" <<'GUEST'
cd /t && ./tracer.test -test.run '^$' -test.bench 'BenchmarkUDPHookCost' -test.benchtime "${N:-3000}x" -test.count 3 2>/dev/null | grep ns/op
GUEST
"$here/fetch.sh" "$@" >/dev/null
for n in "$@"; do
	echo "kernel $n:"
	BOOT_TIMEOUT=1200 "$here/boot.sh" "$n" "$payload" "$payload/bench.sh" | tr -d '\r' | grep -a 'ns/op' |
		awk '{split($1, a, "/"); sub(/-[0-9]+$/, "", a[2]); s[a[2]] += $3; c[a[2]]++}
		END {
			none = s["none"] / c["none"]
			for (h in s) printf "  %-10s %8.0f ns/op (mean of %d), cost over none %8.0f ns\n", h, s[h] / c[h], c[h], s[h] / c[h] - none
			if (c["kprobe"] && c["fentry"])
				printf "  fentry cost / kprobe cost = %.2f\n", (s["fentry"] / c["fentry"] - none) / (s["kprobe"] / c["kprobe"] - none)
			if (c["kprobe"] && c["tracepoint"])
				printf "  tracepoint cost / kprobe cost = %.2f\n", (s["tracepoint"] / c["tracepoint"] - none) / (s["kprobe"] / c["kprobe"] - none)
		}'
done
