#!/usr/bin/env bash
# A scrape at scale: CONNS open TCP connections over loopback in a network
# namespace of its own (both ends on this host: 2 × CONNS sockets), held by
# processes of 9,000 each (the per-process file limit here is 20,000). Prints the
# time of each scrape of the exporter, of `ss -tin` over the same sockets
# (the ratio of the two), the exporter's RSS after the scrapes and its peak
# (VmHWM), and the memory per tracked connection; then the kernel's floor
# of a live read of the same sockets (scripts/iterfloor: an iter/tcp
# program that writes nothing, and one that writes a record of the
# exporter's size). Root only. See BENCHMARKS.md.
#
#   scripts/bench-scale.sh                # CONNS=100000 SCRAPES=3
#   CONNS=10000 scripts/bench-scale.sh
#   ARGS=--tracer.bpf-stats scripts/bench-scale.sh
#                                         # and the live-read program's
#                                         # own time per socket (the
#                                         # kernel's run statistics)
#   CLIENTS=2 scripts/bench-scale.sh    # each round scraped by 2 clients
#                                         # (client_id c1, c2), as an HA
#                                         # pair of Prometheus servers
#   FILES=1000000 CONNS=10000 scripts/bench-scale.sh
#                                         # and 1,000,000 other files open
#                                         # (/dev/null, by processes of
#                                         # 19,000 each): the start-up pass
#                                         # and a scrape against open files
#
# Everything it creates (the namespace, processes) is removed on exit.
set -euo pipefail

CONNS=${CONNS:-100000}
SCRAPES=${SCRAPES:-3}
PORT=${PORT:-19478}
PER_HOLDER=9000 # connections per holder process: 18,000 files
HEAP=${HEAP:-}       # a file: the exporter's heap profile after the scrapes
PROFILE=${PROFILE:-} # a file: the exporter's CPU profile over the last scrape
FILES=${FILES:-0}    # non-socket files held open by other processes
ARGS=${ARGS:-}       # more exporter flags
CLIENTS=${CLIENTS:-1} # clients scraping each round

cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
bench_init ip python3 curl ss
NS=cts-$$

echo "== machine: $(uname -r), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
bench_build
go build -o "$WORK/iterfloor" ./scripts/iterfloor
bench_netns "$NS"
# The holders listen on 10000 and up, below the ephemeral ports: a
# listener on an ephemeral port could find it taken by another holder's
# connect (EADDRINUSE: that holder's connections were missing).
ip netns exec "$NS" sysctl -qw net.ipv4.ip_local_port_range="20000 65535" net.core.somaxconn=65535

# Each holder listens on its own port, connects PER_HOLDER clients to it
# and keeps both ends open until killed; it says "ready" when done.
n_holders=$(((CONNS + PER_HOLDER - 1) / PER_HOLDER))
HOLDERS=()
left=$CONNS
for i in $(seq 0 $((n_holders - 1))); do
	n=$((left < PER_HOLDER ? left : PER_HOLDER))
	left=$((left - n))
	ip netns exec "$NS" python3 -c '
import resource, socket, sys, time
n, port = int(sys.argv[1]), int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_NOFILE, (2 * n + 64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", port)); l.listen(65535)
held = []
for i in range(n):
    c = socket.socket()
    c.connect(("127.0.0.1", port))
    s, _ = l.accept()
    held += [c, s]
print("ready", flush=True)
while True:
    time.sleep(3600)
' "$n" $((10000 + i)) >"$WORK/holder-$i.log" 2>&1 &
	BENCH_PIDS+=($!)
	HOLDERS+=($!)
done
for i in $(seq 0 $((n_holders - 1))); do
	for t in $(seq 600); do
		grep -q ready "$WORK/holder-$i.log" && break
		# Not kill -0: a holder that died stays a zombie (not waited for).
		[[ $(ps -o stat= -p "${HOLDERS[$i]}" 2>/dev/null) == [^Z]* ]] || { cat "$WORK/holder-$i.log" >&2; echo "holder $i died" >&2; exit 1; }
		[[ $t == 600 ]] && { echo "holder $i not ready" >&2; exit 1; }
		sleep 0.5
	done
done
est=$(ip netns exec "$NS" ss -Htn state established | wc -l)
echo "== $est established sockets in $NS (want $((2 * CONNS))), $n_holders holder processes"
[[ $est -ge $((2 * CONNS)) ]] || { echo "missing sockets" >&2; exit 1; }

# FILES non-socket files, held by processes of 19,000 each (the file limit
# here is 20,000 a process), in the host's namespace: what a busy host has
# open besides its sockets.
if ((FILES > 0)); then
	left=$FILES
	n_files=0
	while ((left > 0)); do
		n=$((left < 19000 ? left : 19000))
		left=$((left - n))
		python3 -c '
import resource, sys, time
n = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_NOFILE, (n + 64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
held = [open("/dev/null") for _ in range(n)]
print("ready", flush=True)
time.sleep(3600)
' "$n" >"$WORK/files-$n_files.log" 2>&1 &
		BENCH_PIDS+=($!)
		n_files=$((n_files + 1))
	done
	for i in $(seq 0 $((n_files - 1))); do
		for t in $(seq 600); do
			grep -q ready "$WORK/files-$i.log" && break
			[[ $t == 600 ]] && { cat "$WORK/files-$i.log" >&2; echo "file holder $i not ready" >&2; exit 1; }
			sleep 0.2
		done
	done
	echo "== $FILES other files open in $n_files processes ($(awk '{print $1}' /proc/sys/fs/file-nr) files open on the host)"
fi

# One debug listener serves both profiles.
DEBUG_FLAG=
[[ -n $HEAP || -n $PROFILE ]] && DEBUG_FLAG=--debug.listen-address=127.0.0.1:$((PORT + 1))
# The connections exist before the exporter starts: it finds them at
# start-up (the seeding iterators), as on a busy node. (The state-buffered
# flag has no effect since issue 14's fourth stop; older builds, run for
# the figures before a change, need it.)
t_start=$(date +%s%N)
bench_exporter "$PORT" --tracer.max-tracked-connections=$((2 * CONNS + 65536)) \
	--tracer.max-connections-state-buffered=$((4 * CONNS + 131072)) \
	${DEBUG_FLAG} ${ARGS}
echo "== start-up (to the first answer): $((($(date +%s%N) - t_start) / 1000000)) ms"

ms() { python3 -c 'import sys; print("%.0f" % ((int(sys.argv[2]) - int(sys.argv[1])) / 1e6))' "$1" "$2"; }
declare -a SCR SS
for r in $(seq "$SCRAPES"); do
for c in $(seq "$CLIENTS"); do
	prof=
	if [[ -n $PROFILE && $r == "$SCRAPES" && $c == "$CLIENTS" ]]; then
		curl -fsS -o "$PROFILE" "http://127.0.0.1:$((PORT + 1))/debug/pprof/profile?seconds=3" &
		prof=$!
		sleep 0.2
	fi
	t0=$(date +%s%N)
	curl -fsS -o "$WORK/metrics" "http://127.0.0.1:$PORT/metrics?client_id=c$c"
	t1=$(date +%s%N)
	ip netns exec "$NS" ss -tin >"$WORK/ss"
	t2=$(date +%s%N)
	[[ -n $prof ]] && wait "$prof"
	SCR+=("$(ms "$t0" "$t1")")
	SS+=("$(ms "$t1" "$t2")")
	echo "scrape $r (client c$c): $(ms "$t0" "$t1") ms; ss -tin: $(ms "$t1" "$t2") ms"
done
done
if [[ -n $HEAP ]]; then
	# gc=1: a collection first, so the profile is of now, not of the last
	# collection (which can be from before the scrapes).
	curl -fsS -o "$HEAP" "http://127.0.0.1:$((PORT + 1))/debug/pprof/heap?gc=1"
	# Where the RSS is: the Go heap's own figures, and the mappings'.
	curl -fsS "http://127.0.0.1:$((PORT + 1))/debug/pprof/heap?debug=1" |
		awk '/^# NumGC / { print "go NumGC", $4 }
			/^# (HeapAlloc|HeapInuse|HeapIdle|HeapReleased|StackSys|Sys|NextGC) / { printf "go %s %.1f MiB\n", $2, $4 / 1048576 }'
	grep -E '^(Rss|Anonymous|Shared_Clean|Private_Clean|Private_Dirty):' "/proc/$EXPORTER_PID/smaps_rollup" |
		awk '{ printf "smaps %s %.1f MiB\n", $1, $2 / 1024 }'
fi
tracked=$(awk '/^conntrace_tracked_connections\{/ { s += $2 } END { print s }' "$WORK/metrics")
rss=$(awk '/^VmRSS/ { print $2 }' "/proc/$EXPORTER_PID/status")
hwm=$(awk '/^VmHWM/ { print $2 }' "/proc/$EXPORTER_PID/status")
python3 - "$tracked" "$rss" "$hwm" "${SCR[*]}" "${SS[*]}" <<'EOF'
import sys, statistics as st
tracked, rss, hwm = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
scr = [float(x) for x in sys.argv[4].split()]
ss = [float(x) for x in sys.argv[5].split()]
print(f"== tracked connections (sockets): {tracked:.0f}")
print(f"scrape: {min(scr):.0f}-{max(scr):.0f} ms; ss -tin: {min(ss):.0f}-{max(ss):.0f} ms; ratio of the means: {st.mean(scr) / st.mean(ss):.2f}")
print(f"RSS after the scrapes: {rss / 1024:.0f} MiB, peak {hwm / 1024:.0f} MiB; {hwm * 1024 / max(tracked, 1):.0f} bytes of peak per tracked socket")
EOF
# With --tracer.bpf-stats: the live-read program's time per run (one run
# per socket visited), over every scrape and the start-up pass.
awk '/^conntrace_bpf_program_run(s|_seconds)_total\{.*program="dump_conns(_tcp)?"/ {
	if ($1 ~ /seconds/) s += $2; else n += $2 }
	END { if (n) printf "live-read program (run statistics): %.0f ns per run over %d runs\n", s * 1e9 / n, n }' "$WORK/metrics"
# The floor, with the exporter stopped (its own programs would run too).
kill "$EXPORTER_PID" && wait "$EXPORTER_PID" 2>/dev/null || true
EXPORTER_PID=
ip netns exec "$NS" "$WORK/iterfloor" -reads "$SCRAPES"
