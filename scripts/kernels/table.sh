#!/usr/bin/env bash
# table.sh TESTS_LIST LOG...: one markdown table of the matrix's results,
# a column per kernel (LOG is run.sh's NAME.log), a row per test of
# TESTS_LIST, and what start-up chose and found missing.
set -euo pipefail
list=$1
shift
awk '
FNR == 1 { f++; name[f] = FILENAME; sub(/.*\//, "", name[f]); sub(/\.log$/, "", name[f]) }
FILENAME == ARGV[1] { if ($0 !~ /^#/ && NF) test[++nt] = $1; next }
{ gsub(/\r/, "") }
/@@kernel / { r = $0; sub(/.*@@kernel /, "", r); rel[f] = r }
/^@@startup up=/ { up[f] = substr($0, 14) }
/^@@begin startup/ { st = 1 }
/^@@end startup/ { st = 0 }
st && /msg="UDP bytes hook chosen"/ { if (match($0, /hook=[a-z]+/)) hook[f] = substr($0, RSTART + 5, RLENGTH - 5) }
st && /msg="UDP is not traced/ { hook[f] = "none" }
st && /msg="kernel capability missing"/ { if (match($0, /capability=[^ ]+/)) { c = substr($0, RSTART + 11, RLENGTH - 11); if (index(" " miss[f] " ", " " c " ") == 0) miss[f] = miss[f] (miss[f] == "" ? "" : " ") c } }
/^--- (PASS|FAIL|SKIP): / { r = $2; sub(/:$/, "", r); res[f, $3] = tolower(r) }
/^@@rc=/ { rc[f] = substr($0, 6) }
END {
	n = f; first = 2
	printf "| |"; for (i = first; i <= n; i++) printf " %s |", name[i]; print ""
	printf "| --- |"; for (i = first; i <= n; i++) printf " --- |"; print ""
	printf "| kernel |"; for (i = first; i <= n; i++) printf " %s |", rel[i]; print ""
	printf "| exporter starts, serves metrics |"; for (i = first; i <= n; i++) printf " %s |", up[i] == "1" ? "yes" : "**no**"; print ""
	printf "| UDP bytes hook |"; for (i = first; i <= n; i++) printf " %s |", hook[i] == "" ? "?" : hook[i]; print ""
	printf "| capabilities missing |"; for (i = first; i <= n; i++) printf " %s |", miss[i] == "" ? "none" : miss[i]; print ""
	for (t = 1; t <= nt; t++) {
		printf "| %s |", test[t]
		for (i = first; i <= n; i++) { v = res[i, test[t]]; printf " %s |", v == "" ? "**not run**" : (v == "pass" ? "pass" : "**" v "**") }
		print ""
	}
	printf "| result |"; for (i = first; i <= n; i++) printf " %s |", rc[i] == "0" ? "pass" : "**FAIL**"; print ""
}' "$list" "$@"
