#!/usr/bin/env bash
# Throughput overhead of the exporter: iperf3 between two network namespaces
# joined by veth (198.18.0.1 <-> 198.18.0.2, RFC 2544 test range), without
# and with the exporter running, alternated. Optionally a churn of short
# connections (bash /dev/tcp) the same way. Root only. See BENCHMARKS.md.
#
#   scripts/bench-overhead.sh            # 3 rounds of (off, on), 5 s each
#   ROUNDS=5 DURATION=10 CHURN=2000 scripts/bench-overhead.sh
#
# Everything it creates (namespaces, veth, processes) is removed on exit.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
PORT=${PORT:-19476}            # exporter's listen port, on 127.0.0.1
CHURN=${CHURN:-1000}           # short connections per churn run; 0: skip
IPERF_PORT=5201

cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
bench_init iperf3 ip python3 curl
NS_C=ctb-c-$$
NS_S=ctb-s-$$

echo "== machine"
echo "kernel:  $(uname -r)"
echo "cpu:     $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "nproc:   $(nproc)"
echo "loadavg: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "iperf3:  $(iperf3 --version | head -1)"

echo "== build"
bench_build
echo "built $BIN"

echo "== network: $NS_C (198.18.0.1) <-> $NS_S (198.18.0.2)"
bench_veth "$NS_C" "$NS_S"

ip netns exec "$NS_S" iperf3 -s -B 198.18.0.2 -p $IPERF_PORT >"$WORK/iperf3-server.log" 2>&1 &
BENCH_PIDS+=($!)
# A churn server: accepts, reads to EOF and closes (one thread).
ip netns exec "$NS_S" python3 -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("198.18.0.2", 5202)); s.listen(1024)
while True:
    c, _ = s.accept()
    while c.recv(4096): pass
    c.close()
' >"$WORK/churn-server.log" 2>&1 &
BENCH_PIDS+=($!)
bench_listening "$NS_S" $IPERF_PORT 5202

# The exporter's first scrape (client bench) is its readiness check: that
# client counts what follows.
start_exporter() { BENCH_READY="/metrics?client_id=bench" bench_exporter "$PORT"; }
stop_exporter() { bench_stop_exporter; }

# iperf_run prints the receiver's throughput in Gbit/s.
iperf_run() {
	ip netns exec "$NS_C" iperf3 -c 198.18.0.2 -p $IPERF_PORT -t "$DURATION" -J >"$WORK/iperf.json"
	python3 -c 'import json,sys; print("%.3f" % (json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"]/1e9))' "$WORK/iperf.json"
}

# churn_run prints short connections per second (connect, 100 bytes, close).
churn_run() {
	ip netns exec "$NS_C" bash -c '
		n=$1; msg=$(printf "%0100d" 0)
		start=$(date +%s%N)
		for ((i = 0; i < n; i++)); do
			exec 3<>/dev/tcp/198.18.0.2/5202
			printf %s "$msg" >&3
			exec 3>&-
		done
		end=$(date +%s%N)
		awk -v n="$n" -v ns=$((end - start)) "BEGIN { printf \"%.0f\n\", n / (ns / 1e9) }"
	' churn "$CHURN"
}

stats() { # mean, min, max of the arguments
	python3 -c 'import sys, statistics as s; v=[float(x) for x in sys.argv[1:]]; print("mean %.3f  min %.3f  max %.3f  stdev %.3f" % (s.mean(v), min(v), max(v), s.stdev(v) if len(v) > 1 else 0))' "$@"
}

declare -a OFF ON COFF CON
echo "== iperf3 -t $DURATION, $ROUNDS rounds of (off, on)"
for r in $(seq "$ROUNDS"); do
	t=$(iperf_run); OFF+=("$t"); echo "round $r  off  $t Gbit/s"
	if [[ $CHURN -gt 0 ]]; then c=$(churn_run); COFF+=("$c"); echo "round $r  off  churn $c conn/s"; fi
	start_exporter
	t=$(iperf_run); ON+=("$t"); echo "round $r  on   $t Gbit/s"
	if [[ $CHURN -gt 0 ]]; then c=$(churn_run); CON+=("$c"); echo "round $r  on   churn $c conn/s"; fi
	# The exporter saw the iperf3 traffic (sanity check of the "on" runs).
	seen=$(curl -fsS "http://127.0.0.1:$PORT/metrics?client_id=bench" | grep -c '198\.18\.0\.' || true)
	echo "round $r  on   exporter series naming 198.18.0.x: $seen"
	stop_exporter
done

# summary TITLE OFF... -- ON...: the runs, their statistics and the ratio.
summary() {
	local title=$1; shift
	local off=() on=()
	while [[ $1 != -- ]]; do off+=("$1"); shift; done; shift
	on=("$@")
	echo "== summary ($title)"
	echo "off: ${off[*]}"
	echo "     $(stats "${off[@]}")"
	echo "on:  ${on[*]}"
	echo "     $(stats "${on[@]}")"
	python3 -c 'import sys, statistics as s; a=[float(x) for x in sys.argv[1].split()]; b=[float(x) for x in sys.argv[2].split()]; print("ratio on/off of the means: %.3f" % (s.mean(b)/s.mean(a)))' "${off[*]}" "${on[*]}"
}

summary "Gbit/s" "${OFF[@]}" -- "${ON[@]}"
if [[ $CHURN -gt 0 ]]; then
	summary "$CHURN connections per run, conn/s" "${COFF[@]}" -- "${CON[@]}"
fi
