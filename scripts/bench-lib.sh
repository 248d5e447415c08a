# Shared by the benchmark scripts (sourced): root and tools, a work
# directory, namespaces and processes removed on exit, a veth pair between
# two namespaces, waiting for listeners, the exporter started and waited for.
# shellcheck shell=bash

# bench_init TOOL...: root, the tools, the cleanup trap, WORK.
bench_init() {
	[[ $(id -u) == 0 ]] || { echo "needs root (loads BPF programs, creates namespaces)" >&2; exit 1; }
	for c in "$@"; do
		command -v "$c" >/dev/null || { echo "missing: $c" >&2; exit 1; }
	done
	WORK=$(mktemp -d)
	EXPORTER_PID=
	BENCH_PIDS=()
	BENCH_NETNS=()
	trap bench_cleanup EXIT
	trap 'exit 130' INT TERM
}

bench_cleanup() {
	set +e
	[[ -n $EXPORTER_PID ]] && kill "$EXPORTER_PID" 2>/dev/null && wait "$EXPORTER_PID" 2>/dev/null
	for pid in "${BENCH_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
	for pid in "${BENCH_PIDS[@]}"; do wait "$pid" 2>/dev/null; done
	# Deleting a namespace deletes the veth ends in it.
	for ns in "${BENCH_NETNS[@]}"; do ip netns del "$ns" 2>/dev/null; done
	rm -rf "$WORK"
}

# bench_netns NS: a namespace with loopback up, removed on exit.
bench_netns() {
	ip netns add "$1"
	BENCH_NETNS+=("$1")
	ip -n "$1" link set lo up
}

# bench_veth NS_C NS_S: two namespaces joined by veth, 198.18.0.1/24 in NS_C
# and 198.18.0.2/24 in NS_S (RFC 2544's test range).
bench_veth() {
	local a="v${1//-/}" b="v${2//-/}" # the namespaces' names, as link names
	a=${a:0:15} b=${b:0:15}
	[[ $a != "$b" ]] || { echo "bench_veth: $1 and $2 give one link name" >&2; exit 1; }
	bench_netns "$1"
	bench_netns "$2"
	ip link add "$a" type veth peer name "$b"
	ip link set "$a" netns "$1"
	ip link set "$b" netns "$2"
	ip -n "$1" addr add 198.18.0.1/24 dev "$a"
	ip -n "$2" addr add 198.18.0.2/24 dev "$b"
	ip -n "$1" link set "$a" up
	ip -n "$2" link set "$b" up
	# Short connections: reuse TIME_WAIT ports on the client side.
	ip netns exec "$1" sysctl -qw net.ipv4.tcp_tw_reuse=1 net.ipv4.ip_local_port_range="1024 65535"
}

# bench_listening NS PORT...: waits until something listens on each port.
bench_listening() {
	local ns=$1 port i
	shift
	for port in "$@"; do
		for i in $(seq 51); do
			ip netns exec "$ns" ss -Hltn "sport = :$port" | grep -q . && break
			[[ $i == 51 ]] && { echo "nothing listens on port $port in $ns" >&2; exit 1; }
			sleep 0.1
		done
	done
}

# bench_build builds the exporter (make build) once: BIN.
bench_build() {
	make build >/dev/null
	BIN=$PWD/conntrace_exporter
}

# bench_exporter PORT FLAG...: starts the exporter (bench_build first) on
# 127.0.0.1:PORT and waits until BENCH_READY (a path, / by default)
# answers (start-up seeds what exists: up to 2 minutes at 200,000 sockets).
# Its output goes to $EXPORTER_LOG if set (e.g. with GODEBUG=gctrace=1).
bench_exporter() {
	local port=$1 i
	shift
	"$BIN" --web.listen-address=127.0.0.1:"$port" --log.level=warn "$@" >"${EXPORTER_LOG:-$WORK/exporter.log}" 2>&1 &
	EXPORTER_PID=$!
	for i in $(seq 1200); do
		curl -fsS -o /dev/null "http://127.0.0.1:$port${BENCH_READY:-/}" 2>/dev/null && return 0
		kill -0 "$EXPORTER_PID" 2>/dev/null || { cat "${EXPORTER_LOG:-$WORK/exporter.log}" >&2; echo "exporter died" >&2; exit 1; }
		sleep 0.1
	done
	echo "exporter not ready on 127.0.0.1:$port" >&2
	exit 1
}

# bench_stop_exporter: stops it (the next bench_exporter starts it again).
bench_stop_exporter() {
	kill "$EXPORTER_PID"
	wait "$EXPORTER_PID" || true
	EXPORTER_PID=
}
