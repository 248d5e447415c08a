#!/usr/bin/env bash
# Installs what building, generating and testing need on Debian (bookworm):
# clang/llvm and libbpf headers for bpf2go, iproute2/nftables/iperf3 for the
# kernel tests and benchmarks, prometheus/promtool for the end-to-end tests,
# QEMU, busybox and cpio for the kernel matrix (scripts/kernels).
# Go itself is expected at /usr/local/go (or on PATH).
set -euo pipefail
pkgs=(clang llvm libbpf-dev iproute2 nftables iperf3 prometheus git make
	qemu-system-x86 busybox-static cpio xz-utils zstd)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# --no-install-recommends: prometheus would pull in node-exporter.
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v go >/dev/null || export PATH=$PATH:/usr/local/go/bin
go version
clang --version | head -1
