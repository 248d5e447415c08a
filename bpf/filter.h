/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Connection filters (--config.file), applied where a connection or flow
 * would start being tracked, so excluded traffic costs one lookup per
 * connection (TCP) or per datagram (UDP) and nothing else.
 *
 * Four longest-prefix-match tries, one per list. User space merges into
 * each prefix the port specs of every less specific filter containing it
 * (filter.KernelTables), so the longest match alone answers "does any
 * filter match". Included from conntrace.c.
 */

#define FILTER_MAX_RANGES 16

struct filter_key {
	__u32 prefixlen; /* 8 (the family byte) + the address prefix length */
	__u8 family;
	__u8 addr[16];
};

struct filter_range {
	__u16 lo;
	__u16 hi;
	__u8 tcp;
	__u8 udp;
	__u8 _pad[2];
};

struct filter_ports {
	__u8 all_tcp;
	__u8 all_udp;
	__u8 nranges;
	__u8 _pad;
	struct filter_range ranges[FILTER_MAX_RANGES];
};

/* Set by the loader: 1 when the tries are filled. */
volatile const __u8 filters_on = 0;
volatile const __u8 includes_on = 0;

#define FILTER_TRIE(name)                                   \
	struct {                                                \
		__uint(type, BPF_MAP_TYPE_LPM_TRIE);                \
		__uint(map_flags, BPF_F_NO_PREALLOC);               \
		__uint(max_entries, 10240);                         \
		__type(key, struct filter_key);                     \
		__type(value, struct filter_ports);                 \
	} name SEC(".maps")

FILTER_TRIE(excluded_source);
FILTER_TRIE(excluded_destination);
FILTER_TRIE(included_source);
FILTER_TRIE(included_destination);

static __always_inline bool filter_match(void *trie, const __u8 *addr, __u8 family, __u16 port, __u8 proto)
{
	struct filter_key key = { .prefixlen = 8 + 128, .family = family };
	struct filter_ports *v;

	__builtin_memcpy(key.addr, addr, 16);
	v = bpf_map_lookup_elem(trie, &key);
	if (!v)
		return false;
	if (proto == IPPROTO_TCP ? v->all_tcp : v->all_udp)
		return true;
	for (int i = 0; i < FILTER_MAX_RANGES; i++) {
		if (i >= v->nranges)
			break;
		if (port >= v->ranges[i].lo && port <= v->ranges[i].hi &&
		    (proto == IPPROTO_TCP ? v->ranges[i].tcp : v->ranges[i].udp))
			return true;
	}
	return false;
}

/* traced says whether a connection passes the filters: the local side
 * (local->saddr, sport, family) against the source lists, the remote side
 * against the destination lists. */
static __always_inline bool traced(struct endpoints *local, const __u8 *raddr, __u16 rport, __u8 rfamily, __u8 proto)
{
	if (!filters_on)
		return true;
	if (filter_match(&excluded_source, local->saddr, local->family, local->sport, proto) ||
	    filter_match(&excluded_destination, raddr, rfamily, rport, proto))
		return false;
	if (!includes_on)
		return true;
	return filter_match(&included_source, local->saddr, local->family, local->sport, proto) ||
	       filter_match(&included_destination, raddr, rfamily, rport, proto);
}
