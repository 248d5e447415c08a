# What each kernel of the matrix runs (boot.sh makes it the guest's /run.sh;
# run.sh also runs it on the host, with T set). busybox sh.
#  1. The exporter starts: its start-up log (capabilities, hook choice) and
#     one scrape of its metrics.
#  2. The kernel tests of tests.list, verbose.
T=${T:-/t}
port=${PORT:-9476}
out=$(mktemp -d)
cd "$T" || exit 1
echo "@@kernel $(uname -r)"
echo "@@begin startup"
./conntrace_exporter --web.listen-address="127.0.0.1:$port" --log.level=info >"$out/log" 2>&1 &
pid=$!
up=0
for i in $(seq 1 120); do
	if busybox wget -q -O "$out/metrics" "http://127.0.0.1:$port/metrics?client_id=matrix" 2>/dev/null; then
		up=1
		break
	fi
	kill -0 $pid 2>/dev/null || break
	sleep 1
done
kill $pid 2>/dev/null
wait $pid
cat "$out/log"
grep -E '^conntrace_(kernel_capability|bpf_program_info)' "$out/metrics" 2>/dev/null
echo "@@startup up=$up"
echo "@@end startup"
rm -rf "$out"
cd "$T/tracer" || exit 1
tests=$(grep -v '^#' "$T/tests.list" | grep . | tr '\n' '|' | sed 's/|$//')
CI=true "$T/tracer.test" -test.count=1 -test.v -test.timeout=20m -test.run "^($tests)\$"
rc=$?
[ "$up" = 1 ] || { echo "guest.sh: the exporter did not start and serve its metrics"; exit 1; }
exit $rc
