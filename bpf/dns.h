/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * DNS answers for reverse DNS: cgroup_skb/ingress on the cgroup v2 root sees
 * every packet delivered to a socket of any process, in any netns. UDP
 * packets from port 53 go, payload first 512 bytes, to a ring buffer that
 * user space parses. Everything else returns at the protocol or port check.
 * Included from conntrace.c.
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

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} dns_events SEC(".maps");

SEC("cgroup_skb/ingress")
int dns_ingress(struct __sk_buff *skb)
{
	__u32 l4, off, len;
	__u8 vhl, proto;
	__be16 sport;
	struct dns_event *e;

	if (!dns_on)
		return 1;
	/* The fast way out, for nearly every packet: the IP version and
	 * protocol read straight from the linear data (a helper call each
	 * cost ~60 ns); bpf_skb_load_bytes only when it is too short. */
	__u8 *data = (__u8 *)(long)skb->data, *end = (__u8 *)(long)skb->data_end;
	if (data + 10 <= end) {
		vhl = data[0];
		proto = (vhl >> 4) == 6 ? data[6] : data[9];
		if (proto != IPPROTO_UDP && proto != 0 /* IPv6 hop-by-hop */)
			return 1;
	} else if (bpf_skb_load_bytes(skb, 0, &vhl, 1)) {
		return 1;
	}
	if ((vhl >> 4) == 4) {
		if (bpf_skb_load_bytes(skb, 9, &proto, 1))
			return 1;
		l4 = (vhl & 0xf) * 4;
	} else if ((vhl >> 4) == 6) {
		if (bpf_skb_load_bytes(skb, 6, &proto, 1))
			return 1;
		l4 = 40; /* extension headers before UDP are not followed */
	} else {
		return 1;
	}
	if (proto != IPPROTO_UDP || bpf_skb_load_bytes(skb, l4, &sport, 2) || sport != bpf_htons(53))
		return 1;
	off = l4 + 8;
	if (skb->len <= off)
		return 1;
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
