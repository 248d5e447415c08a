/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * UDP byte counts from fexit programs, for kernels without the
 * sock_send_length and sock_recv_length tracepoints (before Linux 6.3) but
 * with BPF trampolines. The loader picks these, the kprobes (udp_kprobe.h)
 * or the tracepoints (udp.h), never two (tracer/hooks.go).
 *
 *   fexit/udp_sendmsg, udpv6_sendmsg, udp_recvmsg, udpv6_recvmsg
 *       one program per call, which sees the socket, the flags and the
 *       return value together: no kretprobe, and no per-thread map joining
 *       an entry probe to its return as the kprobes need
 *
 * udp_recvmsg and udpv6_recvmsg lost their `noblock` argument in Linux
 * 5.19 and their `addr_len` later (6.18, 7.2). An fexit program reads the return value
 * after the last argument, at an offset the verifier checks against the
 * function's BTF, so each signature has its own program (*_noblock: six
 * arguments, the plain one five, *_noaddrlen four) and the loader keeps the
 * one with the kernel's count.
 *
 * udpv6_sendmsg calls udp_sendmsg for an IPv4-mapped destination with the
 * same IPv6 socket: udp_sendmsg leaves such a call to the outer udpv6_sendmsg,
 * which returns what udp_sendmsg returned, so the datagram is counted once.
 *
 * Reads go through BPF_CORE_READ and cookies come from udp_sock_cookie, as
 * for the kprobes (udp.h, sk_cookie): bpf_get_socket_cookie takes a traced
 * socket only since Linux 5.12. Included from conntrace.c.
 */

static __always_inline int udp_fexit(struct sock *sk, int flags, int ret, bool sent)
{
	if (sent)
		udp_length(&udp_send_peer, sk, ret, flags, true, true);
	else
		udp_length(&udp_recv_peer, sk, ret, flags, false, true);
	return 0;
}

SEC("fexit/udp_sendmsg")
int BPF_PROG(fexit_udp_sendmsg, struct sock *sk, void *msg, __u64 len, int ret)
{
	if (BPF_CORE_READ(sk, __sk_common.skc_family) == AF_INET6)
		return 0; /* called by udpv6_sendmsg, which counts it */
	return udp_fexit(sk, 0, ret, true);
}

SEC("fexit/udpv6_sendmsg")
int BPF_PROG(fexit_udpv6_sendmsg, struct sock *sk, void *msg, __u64 len, int ret)
{
	return udp_fexit(sk, 0, ret, true);
}

SEC("fexit/udp_recvmsg")
int BPF_PROG(fexit_udp_recvmsg, struct sock *sk, void *msg, __u64 len, int flags, int *addr_len, int ret)
{
	return udp_fexit(sk, flags, ret, false);
}

SEC("fexit/udpv6_recvmsg")
int BPF_PROG(fexit_udpv6_recvmsg, struct sock *sk, void *msg, __u64 len, int flags, int *addr_len, int ret)
{
	return udp_fexit(sk, flags, ret, false);
}

SEC("fexit/udp_recvmsg")
int BPF_PROG(fexit_udp_recvmsg_noblock, struct sock *sk, void *msg, __u64 len, int noblock, int flags,
	     int *addr_len, int ret)
{
	return udp_fexit(sk, flags, ret, false);
}

SEC("fexit/udpv6_recvmsg")
int BPF_PROG(fexit_udpv6_recvmsg_noblock, struct sock *sk, void *msg, __u64 len, int noblock, int flags,
	     int *addr_len, int ret)
{
	return udp_fexit(sk, flags, ret, false);
}

SEC("fexit/udp_recvmsg")
int BPF_PROG(fexit_udp_recvmsg_noaddrlen, struct sock *sk, void *msg, __u64 len, int flags, int ret)
{
	return udp_fexit(sk, flags, ret, false);
}

SEC("fexit/udpv6_recvmsg")
int BPF_PROG(fexit_udpv6_recvmsg_noaddrlen, struct sock *sk, void *msg, __u64 len, int flags, int ret)
{
	return udp_fexit(sk, flags, ret, false);
}
