#!/usr/bin/env bash
# fetch.sh NAME...: downloads the Debian kernel packages of the matrix
# (scripts/kernels/matrix) and unpacks them under $KERNEL_CACHE/NAME:
#   vmlinuz, modules/ (lib/modules/<release>), release, package
# The packages are downloaded with apt-get through a sources file of this
# script's own (the machine's apt configuration is not touched) and unpacked
# with dpkg-deb -x: a foreign kernel is never installed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${KERNEL_CACHE:-$here/../../.cache/kernels}
mkdir -p "$cache/apt/lists/partial" "$cache/apt/archives/partial" "$cache/debs"
cache=$(cd "$cache" && pwd)

cat >"$cache/apt/debian.sources" <<SRC
Types: deb
URIs: http://deb.debian.org/debian
Suites: $(awk '!/^#/ && NF {print $2}' "$here/matrix" | sort -u | tr '\n' ' ')
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
apt_opts=(-o "Dir::Etc::sourcelist=$cache/apt/debian.sources" -o Dir::Etc::sourceparts=/nonexistent
	-o "Dir::State::Lists=$cache/apt/lists" -o "Dir::Cache=$cache/apt" -o Debug::NoLocking=1
	-o APT::Sandbox::User=root)

# Lists are refreshed once per hour at most: a matrix run fetches them once.
stamp=$cache/apt/lists/.updated
if [ ! -f "$stamp" ] || [ -n "$(find "$stamp" -mmin +60)" ]; then
	apt-get "${apt_opts[@]}" -qq update
	touch "$stamp"
fi

# depends PKG: the package names PKG depends on (alternatives: the first).
depends() {
	apt-cache "${apt_opts[@]}" show "$1" | awk -F': ' '/^Depends:/ {print $2; exit}' |
		tr ',' '\n' | sed -e 's/|.*//' -e 's/(.*//' -e 's/ //g' | grep -v '^$' || true
}

fetch_one() {
	local name=$1 suite="" meta=""
	read -r suite meta < <(awk -v n="$name" '!/^#/ && $1 == n {print $2, $3}' "$here/matrix") || true
	[ -n "${suite:-}" ] || { echo "fetch.sh: $name is not in $here/matrix" >&2; return 1; }
	# The metapackage names the kernel's own package; from sid on, that one
	# is split into linux-binary (vmlinuz) and linux-modules.
	local image pkgs=()
	image=$(depends "$meta/$suite" | grep -m1 '^linux-image-') || { echo "fetch.sh: $meta/$suite names no kernel" >&2; return 1; }
	pkgs=("$image")
	for dep in $(depends "$image"); do
		case $dep in linux-binary-* | linux-modules-*) pkgs+=("$dep") ;; esac
	done
	local dir=$cache/$name
	if [ -f "$dir/package" ] && [ "$(cat "$dir/package")" = "${pkgs[*]}" ]; then
		echo "kernel $name: ${pkgs[*]} (cached)"
		return 0
	fi
	rm -rf "$dir" && mkdir -p "$dir/root"
	(cd "$cache/debs" && apt-get "${apt_opts[@]}" -qq download "${pkgs[@]/%//$suite}")
	for p in "${pkgs[@]}"; do
		dpkg-deb -x "$(ls "$cache/debs/${p}"_*.deb | sort -V | tail -1)" "$dir/root"
	done
	local vmlinuz mods
	vmlinuz=$(find "$dir/root/boot" "$dir/root/usr/lib/modules" -name 'vmlinuz*' 2>/dev/null | head -1 || true)
	mods=$(find "$dir/root/lib/modules" "$dir/root/usr/lib/modules" -mindepth 1 -maxdepth 1 -type d 2>/dev/null | head -1 || true)
	[ -n "$vmlinuz" ] && [ -n "$mods" ] || { echo "fetch.sh: no vmlinuz or modules in ${pkgs[*]}" >&2; return 1; }
	mv "$vmlinuz" "$dir/vmlinuz"
	mv "$mods" "$dir/modules"
	basename "$mods" >"$dir/release"
	rm -rf "$dir/root"
	echo "${pkgs[*]}" >"$dir/package"
	echo "kernel $name: ${pkgs[*]} ($(cat "$dir/release"))"
}

[ $# -gt 0 ] || set -- $(awk '!/^#/ && NF {print $1}' "$here/matrix")
for n in "$@"; do fetch_one "$n"; done
