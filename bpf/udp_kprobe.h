/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * UDP byte counts from kprobes, for kernels without the sock_send_length and
 * sock_recv_length tracepoints (before Linux 6.3). The loader picks these
 * programs or the tracepoints (tracer/hooks.go), never both.
 *
 *   kprobe/udp_sendmsg, udpv6_sendmsg, udp_recvmsg, udpv6_recvmsg
 *       remember the socket (and recv flags) for the calling thread
 *   kretprobe/ the same four
 *       the call's return value: the bytes it moved, accounted exactly as
 *       the tracepoints do (udp.h), with probe-reads instead of BTF reads
 *
 * udpv6_sendmsg calls udp_sendmsg for an IPv4-mapped destination: the inner
 * return consumes the remembered call, the outer one finds nothing, so the
 * datagram is counted once. The cgroup sendmsg/recvmsg hooks still give
 * the peer of unconnected calls; they run inside these functions.
 *
 *   cgroup/sock_create  makes the cookie of every new UDP socket, which a
 *                       kprobe can read but not make (udp.h, sk_cookie)
 * Included from conntrace.c.
 */

struct udp_call {
	__u64 sk;
	__s32 flags;
	__u8 sent;
	__u8 _pad[3];
};

/* Index of udp_recvmsg's and udpv6_recvmsg's `flags` argument: 3 since
 * Linux 5.19, 4 before (an extra `noblock`). Set by the loader from the
 * kernel's BTF. */
volatile const __u8 recvmsg_flags_arg = 3;

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct udp_call);
} udp_calls SEC(".maps");

static __always_inline int udp_call_enter(struct sock *sk, int flags, bool sent)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct udp_call c = {};

	if (!collect_udp)
		return 0;
	/* The cgroup hook of this call runs inside it, after this probe: a
	 * peer already remembered for the thread is left from a call whose
	 * return was missed (kretprobe instances exhausted), and stale. */
	bpf_map_delete_elem(sent ? (void *)&udp_send_peer : (void *)&udp_recv_peer, &id);
	c.sk = (__u64)sk;
	c.flags = flags;
	c.sent = sent;
	bpf_map_update_elem(&udp_calls, &id, &c, BPF_ANY);
	return 0;
}

static __always_inline int udp_call_return(int ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct udp_call *cp, c;

	cp = bpf_map_lookup_elem(&udp_calls, &id);
	if (!cp)
		return 0;
	c = *cp;
	bpf_map_delete_elem(&udp_calls, &id);
	if (c.sent)
		udp_length(&udp_send_peer, (struct sock *)c.sk, ret, c.flags, true, true);
	else
		udp_length(&udp_recv_peer, (struct sock *)c.sk, ret, c.flags, false, true);
	return 0;
}

SEC("kprobe/udp_sendmsg")
int BPF_KPROBE(kprobe_udp_sendmsg, struct sock *sk) { return udp_call_enter(sk, 0, true); }

SEC("kprobe/udpv6_sendmsg")
int BPF_KPROBE(kprobe_udpv6_sendmsg, struct sock *sk) { return udp_call_enter(sk, 0, true); }

static __always_inline int recvmsg_flags(struct pt_regs *ctx)
{
	long p4 = PT_REGS_PARM4(ctx), p5 = PT_REGS_PARM5(ctx);

	/* Both loads at fixed offsets: the verifier refuses a context read at
	 * an offset chosen at run time, which is what clang makes of a
	 * conditional load. */
	asm volatile("" : "+r"(p4), "+r"(p5));
	return recvmsg_flags_arg == 4 ? (int)p5 : (int)p4;
}

SEC("kprobe/udp_recvmsg")
int BPF_KPROBE(kprobe_udp_recvmsg, struct sock *sk) { return udp_call_enter(sk, recvmsg_flags(ctx), false); }

SEC("kprobe/udpv6_recvmsg")
int BPF_KPROBE(kprobe_udpv6_recvmsg, struct sock *sk) { return udp_call_enter(sk, recvmsg_flags(ctx), false); }

SEC("kretprobe/udp_sendmsg")
int BPF_KRETPROBE(kretprobe_udp_sendmsg, int ret) { return udp_call_return(ret); }

SEC("kretprobe/udpv6_sendmsg")
int BPF_KRETPROBE(kretprobe_udpv6_sendmsg, int ret) { return udp_call_return(ret); }

SEC("kretprobe/udp_recvmsg")
int BPF_KRETPROBE(kretprobe_udp_recvmsg, int ret) { return udp_call_return(ret); }

SEC("kretprobe/udpv6_recvmsg")
int BPF_KRETPROBE(kretprobe_udpv6_recvmsg, int ret) { return udp_call_return(ret); }

SEC("cgroup/sock_create")
int udp_sock_cookie(struct bpf_sock *ctx)
{
	if (ctx->protocol == IPPROTO_UDP)
		bpf_get_socket_cookie(ctx);
	return 1; /* never refuse a socket */
}
