#!/usr/bin/env bash
# run.sh [NAME...]: the kernel matrix, `make test-kernels`. Builds the static
# exporter and kernel-test binaries once, then runs guest.sh on each NAME:
# `host` (this machine's kernel) or a kernel of scripts/kernels/matrix,
# booted under QEMU (boot.sh). Default: host and every kernel of the matrix
# ($KERNELS overrides). Prints each kernel's result in one table (table.sh),
# also written to $KERNEL_CACHE/results.md with the logs beside it, and
# fails if any kernel failed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
export KERNEL_CACHE=${KERNEL_CACHE:-$repo/.cache/kernels}
mkdir -p "$KERNEL_CACHE"
# shellcheck disable=SC2046
[ $# -gt 0 ] || set -- ${KERNELS:-host $(awk '!/^#/ && NF {print $1}' "$here/matrix")}

# Booting kernels and loading BPF programs need root; like the other kernel
# tests, without it the matrix is skipped with a message, except in CI.
if [ "$(id -u)" != 0 ]; then
	[ "${CI:-}" != true ] || { echo "run.sh: the kernel matrix needs root, and CI=true: it must run" >&2; exit 1; }
	echo "run.sh: the kernel matrix needs root (it boots kernels and loads BPF programs): skipped"
	exit 0
fi

payload=$(mktemp -d)
trap 'rm -rf "$payload"' EXIT
mkdir -p "$payload/tracer"
(cd "$repo" && CGO_ENABLED=0 go test -c -o "$payload/tracer.test" ./tracer &&
	CGO_ENABLED=0 go build -trimpath -o "$payload/conntrace_exporter" .)
cp -r "$repo/tracer/testdata" "$payload/tracer/"
cp "${TESTS_LIST:-$here/tests.list}" "$payload/tests.list" # TESTS_LIST: a shorter list, to try one change

guests=()
for n in "$@"; do [ "$n" = host ] || guests+=("$n"); done
[ ${#guests[@]} -eq 0 ] || "$here/fetch.sh" "${guests[@]}"

# Two kernels at a time ($KERNEL_JOBS): a guest under TCG keeps about one
# of this machine's cores busy, so two side by side take ~10 % longer each
# and the matrix half the time (BENCHMARKS.md §16).
jobs_max=${KERNEL_JOBS:-2}

# one NAME: runs guest.sh on NAME, its log in $KERNEL_CACHE/NAME.log, its
# summary line in NAME.summary and its exit status in NAME.rc.
one() {
	local n=$1 log=$KERNEL_CACHE/$1.log start rc=0
	start=$(date +%s)
	if [ "$n" = host ]; then
		T=$payload PORT=19476 busybox sh "$here/guest.sh" >"$log" 2>&1 || rc=$?
		echo "@@rc=$rc" >>"$log"
	else
		"$here/boot.sh" "$n" "$payload" "$here/guest.sh" >"$log" 2>&1 || rc=$?
		# 125: the guest stopped before the script ended (under TCG a
		# kernel panics at boot now and then, e.g. in sched_clock_tick
		# on sid): booted once more, and said so.
		if [ "$rc" = 125 ]; then
			echo "kernel $n: the guest stopped without a result; booting it once more (log: $log.first)" >"$KERNEL_CACHE/$n.summary"
			mv "$log" "$log.first"
			rc=0
			"$here/boot.sh" "$n" "$payload" "$here/guest.sh" >"$log" 2>&1 || rc=$?
		fi
	fi
	echo "kernel $n: exit $rc in $(($(date +%s) - start))s (log: $log)" >>"$KERNEL_CACHE/$n.summary"
	echo "$rc" >"$KERNEL_CACHE/$n.rc"
}

for n in "$@"; do
	rm -f "$KERNEL_CACHE/$n.summary" "$KERNEL_CACHE/$n.rc"
	while [ "$(jobs -rp | wc -l)" -ge "$jobs_max" ]; do wait -n || true; done
	one "$n" &
done
wait

logs=() failed=()
for n in "$@"; do
	log=$KERNEL_CACHE/$n.log
	cat "$KERNEL_CACHE/$n.summary" 2>/dev/null || echo "kernel $n: no result"
	rc=$(cat "$KERNEL_CACHE/$n.rc" 2>/dev/null || echo 1)
	[ "$rc" = 0 ] || { failed+=("$n"); grep -a -E '^(--- FAIL|    .*_test.go:[0-9]+:)' "$log" | head -40 || true; }
	logs+=("$log")
done
"$here/table.sh" "$payload/tests.list" "${logs[@]}" | tee "$KERNEL_CACHE/results.md"
[ ${#failed[@]} -eq 0 ] || { echo "kernel matrix failed on: ${failed[*]}" >&2; exit 1; }
