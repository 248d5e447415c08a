/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * DNS answers for reverse DNS: cgroup_skb on the cgroup v2 root sees every
 * packet a socket of any process, in any netns, sends or receives.
 *
 *   cgroup_skb/egress  dns_egress   a UDP packet to port 53, or from a
 *                                   socket connected to port 53: a query,
 *                                   by its socket and transaction id
 *   cgroup_skb/ingress dns_ingress  a UDP packet from port 53 that answers
 *                                   such a query: payload first 512 bytes
 *                                   to a ring buffer that user space parses
 *
 * An answer to no query (same socket and id, within DNS_QUERY_NS) is not
 * read, and counted: whoever can send a datagram from port 53 to a socket
 * here must not name addresses. The server's address and port are not
 * part of the match: a NAT on this host (Docker's 127.0.0.11, a mesh's DNS
 * capture, a service address) changes them between the egress hook, after
 * the NAT, and the socket. For the same reason a query's port is the
 * socket's when it is connected (before the NAT). Everything else returns
 * at the protocol or port check. Included from conntrace.c.
 */

#define DNS_MAX 512

struct dns_event {
	__u16 len;       /* bytes in data */
	__u8 truncated;  /* the payload was longer than DNS_MAX */
	__u8 _pad[5];
	__u8 data[DNS_MAX];
};

volatile const __u8 dns_on = 0;

/* Force BTF for the event type, which bpf2go turns into a Go struct. */
const struct dns_event *unused_dns_event __attribute__((unused));

__u64 lost_dns_ring_buffer_full;
/* Answers to no query this host sent (forged, or late). */
__u64 dns_unsolicited;

/* How long a query waits for its answer. */
#define DNS_QUERY_NS (10ULL * 1000000000ULL)

struct dns_query_key {
	__u64 cookie; /* the socket that asked */
	__u16 id;     /* the query's transaction id */
	__u16 _pad[3];
};

/* Queries in flight -> when they were sent. LRU: a flood of queries only
 * pushes out the oldest, which then answer to nothing. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct dns_query_key);
	__type(value, __u64);
} dns_queries SEC(".maps");

/* dns_udp finds a UDP packet's transport header: its offset in l4; false
 * for anything but UDP over IPv4/IPv6. */
static __always_inline bool dns_udp(struct __sk_buff *skb, __u32 *l4)
{
	__u8 vhl, proto;

	/* The fast way out, for nearly every packet: the IP version and
	 * protocol read straight from the linear data (a helper call each
	 * cost ~60 ns); bpf_skb_load_bytes only when it is too short. */
	__u8 *data = (__u8 *)(long)skb->data, *end = (__u8 *)(long)skb->data_end;
	if (data + 10 <= end) {
		vhl = data[0];
		proto = (vhl >> 4) == 6 ? data[6] : data[9];
		if (proto != IPPROTO_UDP && proto != 0 /* IPv6 hop-by-hop */)
			return false;
	} else if (bpf_skb_load_bytes(skb, 0, &vhl, 1)) {
		return false;
	}
	if ((vhl >> 4) == 4) {
		if (bpf_skb_load_bytes(skb, 9, &proto, 1))
			return false;
		*l4 = (vhl & 0xf) * 4;
	} else if ((vhl >> 4) == 6) {
		if (bpf_skb_load_bytes(skb, 6, &proto, 1))
			return false;
		*l4 = 40; /* extension headers before UDP are not followed */
	} else {
		return false;
	}
	return proto == IPPROTO_UDP;
}

/* dns_key fills the query key of a packet: its socket, and the
 * transaction id at the payload's start. */
static __always_inline bool dns_key(struct __sk_buff *skb, struct dns_query_key *k, __u32 l4)
{
	__builtin_memset(k, 0, sizeof(*k));
	if (bpf_skb_load_bytes(skb, l4 + 8, &k->id, 2))
		return false;
	k->cookie = bpf_get_socket_cookie(skb);
	return true;
}

SEC("cgroup_skb/egress")
int dns_egress(struct __sk_buff *skb)
{
	struct dns_query_key k;
	__be16 dport;
	__u64 now;
	__u32 l4;

	if (!dns_on || !dns_udp(skb, &l4))
		return 1;
	if (bpf_skb_load_bytes(skb, l4 + 2, &dport, 2))
		return 1;
	if (dport != bpf_htons(53)) {
		/* A NAT may have changed it: the socket's own peer port. */
		struct bpf_sock *sk = skb->sk;

		if (!sk || (__u16)sk->dst_port != bpf_htons(53))
			return 1;
	}
	if (!dns_key(skb, &k, l4))
		return 1;
	now = bpf_ktime_get_ns();
	bpf_map_update_elem(&dns_queries, &k, &now, BPF_ANY);
	return 1; /* never drop */
}


struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} dns_events SEC(".maps");

SEC("cgroup_skb/ingress")
int dns_ingress(struct __sk_buff *skb)
{
	struct dns_query_key k;
	struct dns_event *e;
	__u32 l4, off, len;
	__be16 sport;
	__u64 *sent;

	if (!dns_on || !dns_udp(skb, &l4))
		return 1;
	if (bpf_skb_load_bytes(skb, l4, &sport, 2) || sport != bpf_htons(53))
		return 1;
	off = l4 + 8;
	if (skb->len <= off)
		return 1;
	/* One answer per query: a second one (forged, or a duplicate)
	 * answers nothing. */
	if (!dns_key(skb, &k, l4))
		return 1;
	sent = bpf_map_lookup_elem(&dns_queries, &k);
	if (!sent || bpf_ktime_get_ns() - *sent > DNS_QUERY_NS) {
		__sync_fetch_and_add(&dns_unsolicited, 1);
		return 1;
	}
	bpf_map_delete_elem(&dns_queries, &k);
	len = skb->len - off;
	e = bpf_ringbuf_reserve(&dns_events, sizeof(*e), 0);
	if (!e) {
		__sync_fetch_and_add(&lost_dns_ring_buffer_full, 1);
		return 1;
	}
	e->truncated = len > DNS_MAX;
	if (len > DNS_MAX)
		len = DNS_MAX;
	/* len is 1..DNS_MAX here (skb->len > off); say so in a form older
	 * verifiers (6.1) can follow, which cannot tell that from skb->len. */
	barrier_var(len);
	len = ((len - 1) & (DNS_MAX - 1)) + 1;
	e->len = len;
	if (bpf_skb_load_bytes(skb, off, e->data, len)) {
		bpf_ringbuf_discard(e, BPF_RB_NO_WAKEUP);
		return 1;
	}
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
	return 1; /* never drop */
}
