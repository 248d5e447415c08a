#!/usr/bin/env bash
# boot.sh NAME PAYLOAD_DIR SCRIPT: boots kernel NAME of the matrix (fetched by
# fetch.sh) under QEMU with TCG, with an initramfs of busybox, iproute2 and
# nftables (with their libraries), the kernel's veth and netfilter modules,
# PAYLOAD_DIR copied to /t, and SCRIPT as /run.sh. Prints the console and
# exits with SCRIPT's exit status (124 if the guest ran out of time,
# $BOOT_TIMEOUT seconds, default 900).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${KERNEL_CACHE:-$here/../../.cache/kernels}
name=$1 payload=$2 script=$3
kdir=$cache/$name
[ -f "$kdir/vmlinuz" ] || { echo "boot.sh: kernel $name not fetched (scripts/kernels/fetch.sh $name)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{bin,sbin,etc,proc,sys,dev,tmp,run,lib,lib64,usr/lib}
cp /bin/busybox "$root/bin/busybox"
ln -s /bin/busybox "$root/sbin/modprobe"

# iproute2 (ip netns exec; ss, what listeners are checked against) and
# nftables (loss rules, NAT) with their libraries.
for bin in /usr/sbin/ip /usr/bin/ss /usr/sbin/nft; do
	mkdir -p "$root/usr/sbin" && cp "$bin" "$root/usr/sbin/"
	for lib in $(ldd "$bin" | awk '/=>/ {print $3} /ld-linux/ {print $1}'); do
		mkdir -p "$root$(dirname "$lib")"
		cp -L "$lib" "$root$lib"
	done
done
[ -e "$root/lib64/ld-linux-x86-64.so.2" ] || cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/"

# Modules: veth, netfilter (nf_tables expressions, conntrack, NAT) and
# the TCP socket diagnostics (sock_diag's inet_diag and tcp_diag: the
# listeners' read, and ss), decompressed, indexed by busybox depmod (the
# packages have no modules.dep).
rel=$(cat "$kdir/release")
mdir=$root/lib/modules/$rel
mkdir -p "$mdir"
(cd "$kdir/modules" && find kernel/drivers/net/veth.ko* kernel/net/netfilter kernel/net/ipv4/netfilter \
	kernel/net/ipv4/inet_diag.ko* kernel/net/ipv4/tcp_diag.ko* \
	kernel/net/ipv6/netfilter kernel/lib kernel/crypto -name '*.ko*' 2>/dev/null) | while read -r m; do
	mkdir -p "$mdir/$(dirname "$m")"
	case $m in
	*.xz) xz -dc "$kdir/modules/$m" >"$mdir/${m%.xz}" ;;
	*.zst) zstd -qdc "$kdir/modules/$m" >"$mdir/${m%.zst}" ;;
	*) cp "$kdir/modules/$m" "$mdir/$m" ;;
	esac
done
for f in modules.builtin modules.order; do [ ! -f "$kdir/modules/$f" ] || cp "$kdir/modules/$f" "$mdir/"; done
busybox depmod -b "$root" "$rel"
# Loaded at boot; the rest on demand.
printf '%s\n' veth nf_tables nf_conntrack nf_conntrack_netlink nf_nat nft_ct nft_nat nft_chain_nat \
	nft_numgen nft_counter nft_reject nft_reject_ipv4 nft_quota inet_diag tcp_diag >"$root/etc/modules-load"

install -m 0755 "$here/init" "$root/init"
cp "$script" "$root/run.sh"
mkdir -p "$root/t"
cp -a "$payload/." "$root/t/"
(cd "$root" && find . | cpio -o -H newc --quiet) >"$work/initrd"

rc=0
timeout "${BOOT_TIMEOUT:-900}" qemu-system-x86_64 -accel tcg,thread=multi -cpu max -smp 2 -m 2048 \
	-kernel "$kdir/vmlinuz" -initrd "$work/initrd" -nographic -no-reboot -nic none \
	-append "console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init" | tee "$work/console" || rc=$?
[ "$rc" = 124 ] && { echo "boot.sh: kernel $name: no result within ${BOOT_TIMEOUT:-900}s" >&2; exit 124; }
status=$(tr -d '\r' <"$work/console" | sed -n 's/^@@rc=\([0-9]*\)$/\1/p' | tail -1)
[ -n "$status" ] || { echo "boot.sh: kernel $name: the guest stopped without a result" >&2; exit 125; }
exit "$status"
