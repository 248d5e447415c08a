/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * UDP flows: a flow is one socket and one peer (address and port).
 *
 *   cgroup/sendmsg4|6   the destination of a sendto()/sendmsg() with an
 *                       address, remembered for the calling thread
 *   cgroup/recvmsg4|6   the source of a recvfrom()/recvmsg() that asks for it
 *   tp_btf/sock_send_length, tp_btf/sock_recv_length
 *                       the bytes the call moved (its return value): payload
 *                       bytes, added to the flow of the remembered peer, or of
 *                       the socket's peer for a connected socket
 *
 * On kernels without those tracepoints (before Linux 6.3) udp_kprobe.h
 * gives the same calls' return values from kprobes on udp_sendmsg and
 * udp_recvmsg; the rest is shared.
 *
 * Flows live in a hash map that user space reads (exact: every byte is
 * counted when the call returns) and expires after UDPConnTimeout idle.
 * Included from conntrace.c.
 */

struct udp_key {
	__u64 cookie;
	__u8 raddr[16];
	__u16 rport;
	__u8 family;
	__u8 _pad[5];
};

struct udp_flow {
	__u64 id; /* unique per flow: user space's key */
	__u64 sent_bytes;
	__u64 recv_bytes;
	__u64 start_ns;
	__u64 last_ns;
	__u64 cgroup; /* the socket's cgroup id (cgroup.h) */
	__u32 pid;
	__u32 netns;
	__u8 laddr[16];
	__u16 sport;
	__u8 family;
	__u8 direction;
	char comm[COMM_LEN];
	__u8 _pad[4];
};

struct udp_peer {
	__u64 cookie; /* of the socket of the call: a peer left by another call is not taken */
	__u8 addr[16];
	__u16 port;
	__u8 family;
	__u8 _pad[5];
};

volatile const __u8 collect_udp = 1;

__u64 lost_udp_flows_full;
/* Calls that may have been lost to the closing of their idle flow (see
 * udp_account). */
__u64 lost_udp_expiring;
/* UDPConnTimeout in ns: user space closes a flow idle for longer. Set by
 * the loader. */
volatile const __u64 udp_idle_ns = 30000000000ULL;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536); /* MaxTrackedConnections, set by the loader */
	__type(key, struct udp_key);
	__type(value, struct udp_flow);
} udp_flows SEC(".maps");

/* Peer of the datagram being sent or received, per thread, between the
 * cgroup hook and the length tracepoint of the same call. LRU: an entry
 * whose call never reached the tracepoint cannot pile up. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct udp_peer);
} udp_send_peer SEC(".maps"), udp_recv_peer SEC(".maps");

/* Per-CPU flow sequence (see new_flow_id). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} flow_seq SEC(".maps");

/* new_flow_id returns a flow ID no other flow has (never 0): a per-CPU
 * sequence with the CPU's number in the low 12 bits. Not one shared atomic
 * counter: an atomic add that returns the old value needs Linux 5.12, and
 * before that the verifier refuses the whole program, even where the
 * instruction cannot be reached. The programs that call this run with
 * preemption off, so a CPU's sequence has one writer at a time. */
static __always_inline __u64 new_flow_id(void)
{
	__u32 zero = 0;
	__u64 *seq;

	seq = bpf_map_lookup_elem(&flow_seq, &zero);
	if (!seq)
		return 0;
	*seq += 1;
	return (*seq << 12) | (bpf_get_smp_processor_id() & 0xfff);
}

static __always_inline void peer_from_user(struct bpf_sock_addr *ctx, struct udp_peer *p, bool v6)
{
	__builtin_memset(p, 0, sizeof(*p)); /* the cookie is the caller's */
	p->port = bpf_ntohs((__u16)ctx->user_port);
	if (!v6) {
		__u32 a = ctx->user_ip4;
		__builtin_memcpy(p->addr, &a, 4);
		p->family = AF_INET;
		return;
	}
	__u32 a0 = ctx->user_ip6[0], a1 = ctx->user_ip6[1], a2 = ctx->user_ip6[2], a3 = ctx->user_ip6[3];
	__builtin_memcpy(p->addr, &a0, 4);
	__builtin_memcpy(p->addr + 4, &a1, 4);
	__builtin_memcpy(p->addr + 8, &a2, 4);
	__builtin_memcpy(p->addr + 12, &a3, 4);
	p->family = AF_INET6;
	if (is_v4mapped(p->addr)) {
		unmap_v4(p->addr);
		p->family = AF_INET;
	}
}

static __always_inline int remember_peer(void *map, struct bpf_sock_addr *ctx, bool v6)
{
	struct udp_peer p;
	__u64 id = bpf_get_current_pid_tgid();

	/* Only UDP: the length programs take a peer for UDP calls alone, and
	 * return at once for any other socket (UDP-Lite goes through the same
	 * hooks). */
	if (collect_udp && ctx->protocol == IPPROTO_UDP) {
		peer_from_user(ctx, &p, v6);
		p.cookie = bpf_get_socket_cookie(ctx);
		bpf_map_update_elem(map, &id, &p, BPF_ANY);
	}
	return 1; /* never refuse the call */
}

SEC("cgroup/sendmsg4")
int udp_sendmsg4(struct bpf_sock_addr *ctx) { return remember_peer(&udp_send_peer, ctx, false); }

SEC("cgroup/sendmsg6")
int udp_sendmsg6(struct bpf_sock_addr *ctx) { return remember_peer(&udp_send_peer, ctx, true); }

SEC("cgroup/recvmsg4")
int udp_recvmsg4(struct bpf_sock_addr *ctx) { return remember_peer(&udp_recv_peer, ctx, false); }

SEC("cgroup/recvmsg6")
int udp_recvmsg6(struct bpf_sock_addr *ctx) { return remember_peer(&udp_recv_peer, ctx, true); }

/* connected_peer: the peer of a connected socket; the unspecified address
 * and port 0 for an unconnected one (a datagram read without asking who
 * sent it). */
static __always_inline void connected_peer(struct sock *sk, struct udp_peer *p, bool probed)
{
	struct endpoints tmp;

	__builtin_memset(p, 0, sizeof(*p));
	if (!read_endpoints_of(sk, &tmp, probed))
		return;
	p->family = tmp.family;
	if (SK_FIELD(probed, sk, __sk_common.skc_state) != TCP_ESTABLISHED)
		return; /* not connected */
	__builtin_memcpy(p->addr, tmp.daddr, 16);
	p->port = tmp.dport;
}

/* sk_cookie: the socket's cookie. A kprobe cannot call
 * bpf_get_socket_cookie (cookies are made on first use); with the kprobes,
 * udp_sock_cookie (udp_kprobe.h) makes one for every UDP socket created,
 * and seed_listeners for those that existed at start-up. A socket without
 * one (made between the two) is keyed by its address, unique while it
 * lives. */
static __always_inline __u64 sk_cookie(struct sock *sk, bool probed)
{
	__u64 c;

	if (!probed)
		return bpf_get_socket_cookie(sk);
	c = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
	return c ? c : (__u64)sk;
}

/* sk_userlocks was a 4-bit bitfield until Linux 6.9 (sk_protocol until 5.6,
 * before any kernel the tracepoints or this exporter run on): a plain read
 * would be relocated to the containing byte and mix in its neighbours.
 * Read once per new flow, so the probe-read costs little. */
#define SK_USERLOCKS(sk) ((__u32)BPF_CORE_READ_BITFIELD_PROBED(sk, sk_userlocks))
#define SK_PROTOCOL(probed, sk) ((probed) ? (__u32)BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol) : (__u32)(sk)->sk_protocol)

/* flow_endpoints reads the local end of a new flow whose family is its
 * peer's, false when the flow is not traced. An IPv6 socket bound to :: or
 * to an IPv4-mapped address (dual stack) carries IPv4 flows too: those are
 * IPv4, with the IPv4 form of the local address (0.0.0.0 for ::), traced
 * whatever collect_ipv6 says. */
static __always_inline bool flow_endpoints(struct sock *sk, struct endpoints *st, __u8 family, bool probed)
{
	__u64 hi, lo;

	if (read_endpoints_of(sk, st, probed) && st->family == family)
		return true;
	if (family != AF_INET || SK_FIELD(probed, sk, __sk_common.skc_family) != AF_INET6)
		return false;
	/* read_endpoints_of filled the addresses before deciding. */
	if (is_v4mapped(st->saddr)) {
		unmap_v4(st->saddr);
	} else {
		__builtin_memcpy(&hi, st->saddr, 8);
		__builtin_memcpy(&lo, st->saddr + 8, 8);
		if (hi | lo)
			return false; /* bound to an IPv6 address: no IPv4 here */
	}
	__builtin_memset(st->daddr, 0, sizeof(st->daddr));
	st->family = AF_INET;
	return true;
}

static __always_inline void udp_account(struct sock *sk, __u64 cookie, struct udp_peer *peer, __u64 bytes, bool sent,
					bool probed)
{
	struct udp_key key = {};
	struct udp_flow *f, nf;
	struct endpoints tmp;
	__u64 now, cgroup;
	bool idle;
	long err;

	key.cookie = cookie;
	__builtin_memcpy(key.raddr, peer->addr, 16);
	key.rport = peer->port;
	key.family = peer->family;
	f = bpf_map_lookup_elem(&udp_flows, &key);
	if (!f) {
		if (!flow_endpoints(sk, &tmp, peer->family, probed))
			return; /* IPv6 disabled */
		if (!traced(&tmp, peer->addr, peer->port, peer->family, IPPROTO_UDP) ||
		    !sk_cgroup_id(sk, probed, &cgroup))
			return;
		__builtin_memset(&nf, 0, sizeof(nf));
		nf.id = new_flow_id();
		if (!nf.id)
			return;
		nf.start_ns = bpf_ktime_get_ns();
		nf.last_ns = nf.start_ns;
		nf.pid = bpf_get_current_pid_tgid() >> 32;
		nf.cgroup = cgroup;
		bpf_get_current_comm(nf.comm, sizeof(nf.comm));
		nf.netns = tmp.netns;
		__builtin_memcpy(nf.laddr, tmp.saddr, 16);
		nf.sport = tmp.sport;
		nf.family = peer->family;
		nf.direction = (SK_USERLOCKS(sk) & SOCK_BINDPORT_LOCK) ? DIR_INCOMING : DIR_NONE;
		err = bpf_map_update_elem(&udp_flows, &key, &nf, BPF_NOEXIST);
		if (err && err != -17 /* EEXIST: another CPU created it */) {
			__sync_fetch_and_add(&lost_udp_flows_full, 1);
			return;
		}
		f = bpf_map_lookup_elem(&udp_flows, &key);
		if (!f)
			return;
	}
	now = bpf_ktime_get_ns();
	idle = now - f->last_ns > udp_idle_ns;
	if (sent)
		__sync_fetch_and_add(&f->sent_bytes, bytes);
	else
		__sync_fetch_and_add(&f->recv_bytes, bytes);
	f->last_ns = now;
	/* User space closes an idle flow by deleting it with a copy of its
	 * counters: if that ran between this program's lookup and its add,
	 * the add went to the deleted entry (RCU keeps it valid, not
	 * counted). Rare (the first datagram after the timeout, at the very
	 * moment of the sweep), so only checked then, and counted: at most
	 * (the copy may have come after the add). */
	if (idle && !bpf_map_lookup_elem(&udp_flows, &key))
		__sync_fetch_and_add(&lost_udp_expiring, 1);
}

static __always_inline void udp_length(void *peers, struct sock *sk, int ret, int flags, bool sent, bool probed)
{
	struct udp_peer peer, *p;
	__u64 id, cookie;

	/* First, for every call of every socket (TCP sends and receives
	 * too): anything but UDP costs this read and nothing else. Only UDP
	 * calls leave a peer (remember_peer). */
	if (!collect_udp || SK_PROTOCOL(probed, sk) != IPPROTO_UDP)
		return;
	id = bpf_get_current_pid_tgid();
	__builtin_memset(&peer, 0, sizeof(peer)); /* else clang may read it uninitialised */
	/* Take the call's peer first, whatever the call's result: an entry
	 * left behind would be charged to the thread's next call. One of
	 * another socket is left by a call this program missed (a recursion
	 * miss: preempted inside it on a preemptible kernel, another thread
	 * ran it on the CPU): not this call's peer. */
	p = bpf_map_lookup_elem(peers, &id);
	if (p) {
		peer = *p;
		bpf_map_delete_elem(peers, &id);
	}
	/* Peeks are read again; error-queue reads return an ICMP error's
	 * quote or a looped-back sent packet, not data from the peer. */
	if (ret <= 0 || (flags & (MSG_PEEK | MSG_ERRQUEUE)))
		return;
	cookie = sk_cookie(sk, probed);
	if (!p || peer.cookie != cookie)
		connected_peer(sk, &peer, probed);
	udp_account(sk, cookie, &peer, ret, sent, probed);
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(handle_send_length, struct sock *sk, int ret, int flags)
{
	udp_length(&udp_send_peer, sk, ret, flags, true, false);
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(handle_recv_length, struct sock *sk, int ret, int flags)
{
	udp_length(&udp_recv_peer, sk, ret, flags, false, false);
	return 0;
}
