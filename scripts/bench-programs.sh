#!/usr/bin/env bash
# What each BPF program of the exporter costs, from the kernel's own run
# statistics (--tracer.bpf-stats: the exporter's conntrace_bpf_program_runs_total
# and _run_seconds_total, the same counters as bpftool prog show). Two
# workloads between two network namespaces joined by veth (198.18.0.1 <->
# 198.18.0.2): a bulk transfer (iperf3) and short connections (connect, 100
# bytes each way, close; both ends on this host). Prints per program: runs,
# ns per run, runs per connection; the BPF time per connection and per run,
# its share of the transfer's CPU, and the exporter's CPU per connection.
# The iterators (dump_conns*) run at the two scrapes that take the samples:
# shown, not added to the workload's totals.
# Root only. See BENCHMARKS.md.
#
#   scripts/bench-programs.sh                  # ROUNDS=3 BYTES=4G CONNS=3000
#
# Everything it creates (namespaces, veth, processes) is removed on exit.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
BYTES=${BYTES:-4G}   # iperf3 -n: bytes of the bulk transfer
CONNS=${CONNS:-3000} # short connections per round
PORT=${PORT:-19477}  # the exporter's listen port, on 127.0.0.1
ARGS=${ARGS:-}       # more flags for the exporter, e.g. --no-tracer.enable-conntrack
PROFILE=${PROFILE:-} # a file: the exporter's CPU profile during the last round's short connections

cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
bench_init iperf3 ip python3 curl
NS_C=ctp-c-$$
NS_S=ctp-s-$$

echo "== machine: $(uname -r), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), $(iperf3 --version | head -1)"
bench_build
bench_veth "$NS_C" "$NS_S"

ip netns exec "$NS_S" iperf3 -s -B 198.18.0.2 -p 5201 >"$WORK/iperf3-server.log" 2>&1 &
BENCH_PIDS+=($!)
# Short connections: the server reads 100 bytes, answers 100, closes.
ip netns exec "$NS_S" python3 -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("198.18.0.2", 5202)); s.listen(4096)
while True:
    c, _ = s.accept()
    n = 0
    while n < 100:
        b = c.recv(100 - n)
        if not b: break
        n += len(b)
    c.sendall(b"x" * 100)
    c.close()
' >"$WORK/short-server.log" 2>&1 &
BENCH_PIDS+=($!)
bench_listening "$NS_S" 5201 5202

# shellcheck disable=SC2086 # ARGS is a list of flags
bench_exporter "$PORT" --tracer.bpf-stats $ARGS ${PROFILE:+--debug.listen-address=127.0.0.1:$((PORT + 1))}

# sample FILE: the programs' runs and run seconds, and the exporter's CPU
# seconds.
sample() {
	# Every thread's time on the CPU, in ns (schedstat; stat's ticks are
	# 10 ms), before and after the scrape: the workload's window runs from
	# one sample's end to the next one's start, without their scrapes.
	cpu() { cat /proc/"$EXPORTER_PID"/task/*/schedstat | awk -v k="$1" '{ ns += $1 } END { print k, ns / 1e9 }'; }
	cpu cpu_before >"$1"
	curl -fsS "http://127.0.0.1:$PORT/metrics" | grep -E '^conntrace_bpf_program_(runs|run_seconds)_total' >>"$1"
	cpu cpu_after >>"$1"
}

# report TITLE BEFORE AFTER CONNS [TRANSFER_CPU_SECONDS]
report() {
	python3 - "$@" <<'EOF'
import re, sys
title, before, after, conns = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
transfer_cpu = float(sys.argv[5]) if len(sys.argv) > 5 else 0
def read(path):
    runs, secs, cpu = {}, {}, {}
    for line in open(path):
        if line.startswith("cpu_"):
            k, v = line.split(); cpu[k] = float(v); continue
        m = re.match(r'conntrace_bpf_program_(runs|run_seconds)_total\{[^}]*program="([^"]+)"[^}]*\} (\S+)', line)
        if m:
            (runs if m.group(1) == "runs" else secs)[m.group(2)] = float(m.group(3))
    return runs, secs, cpu
r0, s0, cpu0 = read(before)
r1, s1, cpu1 = read(after)
c0, c1 = cpu0["cpu_after"], cpu1["cpu_before"]
total_ns = total_runs = 0
rows = []
for p in sorted(r1):
    runs = r1[p] - r0.get(p, 0)
    ns = (s1.get(p, 0) - s0.get(p, 0)) * 1e9
    if runs <= 0:
        continue
    # The iterators run at the scrapes that take the samples (once per
    # socket visited), not in the workload: shown, not added up.
    if not p.startswith("dump_conns"):
        total_ns += ns; total_runs += runs
    rows.append((p, runs, ns / runs, runs / conns, ns / conns))
print(f"-- {title}")
print(f"{'program':<22} {'runs':>10} {'ns/run':>8} {'runs/conn':>10} {'ns/conn':>9}")
for p, runs, nsr, rpc, npc in rows:
    print(f"{p:<22} {runs:>10.0f} {nsr:>8.0f} {rpc:>10.2f} {npc:>9.0f}")
print(f"BPF: {total_ns / max(total_runs, 1):.0f} ns per run on average, {total_ns / conns:.0f} ns per connection")
if transfer_cpu > 0:
    print(f"BPF share of the transfer's CPU: {100 * total_ns / 1e9 / transfer_cpu:.3f} % ({total_ns / 1e9:.3f} s of {transfer_cpu:.2f} s)")
if conns > 1:
    print(f"exporter CPU: {(c1 - c0) * 1e6 / conns:.2f} us per connection")
else:
    print(f"exporter CPU: {c1 - c0:.2f} s")
EOF
}

for r in $(seq "$ROUNDS"); do
	echo "== round $r"
	sample "$WORK/b0"
	ip netns exec "$NS_C" iperf3 -c 198.18.0.2 -p 5201 -n "$BYTES" -J >"$WORK/iperf.json"
	sample "$WORK/b1"
	# The transfer's CPU: iperf3's own (both ends, user and system) over its duration.
	cpu=$(python3 -c 'import json,sys; e=json.load(open(sys.argv[1]))["end"]; d=e["sum_received"]["seconds"]; c=e["cpu_utilization_percent"]; print(d*(c["host_total"]+c["remote_total"])/100)' "$WORK/iperf.json")
	report "bulk: iperf3 -n $BYTES (one connection)" "$WORK/b0" "$WORK/b1" 1 "$cpu"

	sample "$WORK/s0"
	prof=
	if [[ -n $PROFILE && $r == "$ROUNDS" ]]; then
		curl -fsS -o "$PROFILE" "http://127.0.0.1:$((PORT + 1))/debug/pprof/profile?seconds=${PROFILE_SECONDS:-5}" &
		prof=$!
	fi
	ip netns exec "$NS_C" python3 -c '
import socket, sys
for _ in range(int(sys.argv[1])):
    c = socket.create_connection(("198.18.0.2", 5202))
    c.sendall(b"y" * 100)
    n = 0
    while n < 100:
        b = c.recv(100 - n)
        if not b: break
        n += len(b)
    c.close()
' "$CONNS"
	sleep 0.5 # the last closes reach the ring buffer
	[[ -n $prof ]] && wait "$prof"
	sample "$WORK/s1"
	report "short connections: $CONNS (100 B each way, both ends here)" "$WORK/s0" "$WORK/s1" "$CONNS"
done
