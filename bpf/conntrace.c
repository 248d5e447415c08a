//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * conntrace: per-socket TCP accounting on tracepoints, sockops and iterators.
 *
 * No fentry (refused on some locked-down kernels) and no kprobes, except the
 * UDP fallbacks in udp_fentry.h and udp_kprobe.h for kernels without
 * sock_send_length.
 *
 *   tp_btf/inet_sock_set_state  connection lifecycle: starts tracking at
 *                               SYN_SENT (active) and SYN_RECV->ESTABLISHED
 *                               (passive), takes baselines at ESTABLISHED,
 *                               emits the final record at CLOSE; remembers
 *                               listeners (for the PID of accepted sockets).
 *   tp_btf/tcp_destroy_sock     safety net: a tracked socket destroyed
 *                               without a CLOSE transition is finished here.
 *   sockops (cgroup v2 root)    enables the RTT callback on every socket and
 *                               adds each RTT sample to the histogram.
 *   iter/task_file              seeds connections (and listeners) that
 *                               existed before start-up, in every netns; and
 *                               on each scrape reads the live counters of
 *                               every tracked socket a process holds, so
 *                               values are exact at the time of the scrape,
 *                               not of the last event. (Map iterators, e.g.
 *                               iter/bpf_sk_storage_map, are refused on
 *                               locked-down kernels; iter/tcp is per netns.)
 *
 * Per-socket state lives in socket local storage (sk_storage): the kernel
 * frees it with the socket, so nothing leaks when a close is missed, and it
 * is keyed by the socket, not by PID (the seed's PID-in-key bugs).
 *
 * Bytes are the kernel's own counters: bytes_acked (payload the peer
 * acknowledged) and bytes_received (payload that arrived in order). Both
 * also count the SYN and FIN sequence numbers; the SYN is removed by taking
 * the baseline at ESTABLISHED, the FINs as described at sent_payload() and
 * recv_payload().
 */
#include "include/conntrace_kernel.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define RTT_BUCKETS 32
#define COMM_LEN 16

enum conn_flag {
	CONN_ESTABLISHED = 1,
	CONN_CLOSED = 2,
	CONN_PREEXISTING = 4,
	/* A connect that failed before its SYN: no local port was free. */
	CONN_NO_LOCAL_PORT = 8,
	/* Kernel side only: found connecting by a seeding pass, so its
	 * handshake's start is unknown. */
	CONN_SEEDED = 16,
	/* Live records: the peer's receive window is zero and data waits to
	 * be sent (stalled on a zero window). */
	CONN_ZERO_WINDOW = 32,
	/* A reset sent after the connection's final record (see
	 * late_reset): it adds that reset, and nothing else. */
	CONN_ADDENDUM = 64,
};

/* An addendum's generation: its connection's, with this bit and the
 * addendum's number (bits 24-30) set, so that it is a key of its own. */
#define ADDENDUM_GEN 0x80000000u

enum conn_direction {
	DIR_INCOMING = 1,
	DIR_OUTGOING = 2,
	DIR_NONE = 4,
};

/* A connection's ends: addresses (an IPv4 one in the first 4 bytes),
 * ports (host order), network namespace and family. */
struct endpoints {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u32 netns;
	__u8 family;
};

/* Per-socket state, in socket local storage. */
struct conn_state {
	__u64 cookie;
	__u64 start_ns;
	__u64 base_acked;
	__u64 base_received;
	__u64 rtt_sum_us;
	__u64 dump_session; /* last iterator session that reported it */
	__u64 base_bytes_retrans;
	__u64 cgroup; /* the socket's cgroup id (cgroup.h) */
	__u32 base_retrans;
	__u32 base_segs_out;
	__u32 base_dsack;
	__u32 base_reord;
	__u32 base_ooo;
	__u32 base_ce;
	/* What limited sending, at the baseline (jiffies; see read_chrono),
	 * and as the last whole live read saw it, at chrono_at (jiffies):
	 * a live read grows by at most the jiffies since (cap_chrono). */
	__u32 base_chrono[3];
	__u32 chrono_seen[3];
	__u32 chrono_at;
	/* Counted here, from events: retransmission timeouts (the sockops
	 * RTO callback), fast recovery entries (tcp_cong_state_set), resets
	 * sent and received (tcp_send_reset, tcp_receive_reset). */
	__u32 rtos;
	__u32 recoveries;
	__u32 resets_sent;
	__u32 resets_received;
	__u32 gen;
	__u32 pid;
	/* SYN sent or received to ESTABLISHED, in µs (at least 1); 0 when
	 * unknown (see handshake_from_syn). */
	__u32 handshake_us;
	__u32 rtt_buckets[RTT_BUCKETS];
	struct endpoints e;
	__u8 direction;
	__u8 flags;
	/* Its final record is on the ring buffer (finish_conn); and how many
	 * addenda followed it (late_reset). */
	__u8 recorded : 1, addenda : 7;
	char comm[COMM_LEN];
};

/* What user space reads: from the iterator (live) and the ring buffer (closed). */
struct conn_record {
	__u64 cookie;
	__u64 ts_ns;
	__u64 start_ns;
	__u64 sent_bytes;
	__u64 recv_bytes;
	__u64 rtt_sum_us;
	__u64 retrans_bytes; /* bytes retransmitted (tcpi_bytes_retrans) */
	__u64 cgroup;        /* the socket's cgroup id, 0 unknown (cgroup.h) */
	__u32 retransmits;
	__u32 sent_segments; /* data segments sent, retransmissions included */
	__u32 rtos;          /* retransmission timeouts */
	__u32 recoveries;    /* fast recovery entries */
	__u32 dsacks;        /* D-SACKs received: spurious retransmissions (tcpi_dsack_dups) */
	__u32 reorders;      /* reorderings seen (tcpi_reord_seen) */
	__u32 ooo_packets;   /* packets received out of order (tcpi_rcv_ooopack) */
	__u32 ce_marks;      /* segments the peer echoed CE marks for (tcpi_delivered_ce) */
	__u32 resets_sent;     /* RSTs this end sent */
	__u32 resets_received; /* RSTs this end took from the peer (tcp_reset()) */
	/* What limited sending, in jiffies (see read_chrono): time with data
	 * in flight or waiting (tcpi_busy_time, the two below included),
	 * limited by the peer's receive window (tcpi_rwnd_limited), by the
	 * send buffer (tcpi_sndbuf_limited). */
	__u32 busy_jiffies;
	__u32 rwnd_limited_jiffies;
	__u32 sndbuf_limited_jiffies;
	__u32 srtt_us;
	__u32 handshake_us;
	__u32 gen;
	__u32 pid;
	__u32 netns;
	__u32 rtt_buckets[RTT_BUCKETS];
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u8 family;
	__u8 direction;
	__u8 flags;
	__u8 state;
	char comm[COMM_LEN];
	/* The kernel's error on the socket (sk_err) in the final record: why
	 * a connect failed or an established connection was aborted. 0 in
	 * live records. */
	__u16 err;
};

struct listener_key {
	__u32 netns;
	__u16 port;
	__u16 _pad;
};

struct listener {
	__u32 pid;
	/* Listening sockets on the port (several with SO_REUSEPORT): the
	 * entry goes with the last. */
	__u32 socks;
	/* Of those, MPTCP listeners found by the seeding passes: their own
	 * close is never seen, the TCP listener inside them closes instead
	 * (see forget_listener). */
	__u32 mptcp;
	char comm[COMM_LEN];
	/* SYN-ACKs the port's listening sockets sent again (their handshake's
	 * last ACK did not come, or the accept queue was full when it did). */
	__u64 synack_retrans;
};

/* A listening socket, counted once in listeners: the state change and the
 * seeding passes may both see it. port is 0 until known: listen() without
 * bind() picks it after the state change (see handle_sockops). */
struct listen_sock {
	__u32 netns;
	__u32 port;
	__u32 pid;
	char comm[COMM_LEN];
};

/* Set by the loader. */
volatile const __u32 max_tracked = 65536;
volatile const __u8 collect_ipv6 = 1;
/* Set by the loader from the kernel version: the sockops RTT callback
 * passes the sample in args[0] (Linux 6.10). */
volatile const __u8 rtt_sample_arg = 1;
/* Set by the loader: time incoming handshakes from their SYN (a map
 * update per SYN; --tracer.incoming-handshakes). */
volatile const __u8 time_incoming = 1;

/* Health counters, read by user space from .bss. */
__u64 tracked;
__u64 lost_tracked_full;
/* Connections not traced because their socket storage could not be made
 * (no memory, the socket being freed, or the storage busy on this CPU). */
__u64 lost_storage;
__u64 lost_ring_buffer_full;
__u64 listeners_full;

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct conn_state);
} conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 23); /* resized by the loader */
} closed_conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct listener_key);
	__type(value, struct listener);
} listeners SEC(".maps");

/* Listening socket (its address, a number) -> where it listens. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct listen_sock);
} listen_socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct conn_record);
} scratch SEC(".maps");

/* A connection as a SYN names it (the listener's side: local, remote),
 * from the SYN's arrival (sockops, on the request socket) to the passive
 * ESTABLISHED. IPv4-mapped addresses as read_endpoints gives them. Not
 * keyed by network namespace (the request socket's is not readable in
 * sockops on every kernel): two namespaces with the same four-tuple at
 * the same moment would share an entry. */
struct syn_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u8 family;
	__u8 _pad[3];
};

#define SYN_SLOTS 65536

/* When each pending connection's SYN came, in a slot chosen by a keyed
 * hash of its endpoints (syn_hash): an array, not a hash map, whose
 * update under a lock, and an LRU's list work, cost about 600 ns a SYN
 * (BENCHMARKS.md §14, §15). A slot is one word, written and taken whole
 * (no torn entry): the SYN's time (in 1.024 µs, see SYN_TIME_SHIFT) above
 * 16 bits of the hash the slot index does not use (a tag: another
 * handshake's entry in the slot is not taken for this one's, but for 1
 * in 65,536); 0: free. A SYN takes its slot: a pending handshake that
 * shared it loses its sample. Resized to 1 by the loader when incoming
 * handshakes are not timed. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SYN_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} syn_times SEC(".maps");

/* Set by the loader (random): the hash's key, so that whoever sends SYNs
 * cannot aim them at the slots of others' handshakes. */
volatile const __u32 syn_seed = 0;

/* A slot's time is bpf_ktime_get_ns() >> SYN_TIME_SHIFT: units of
 * 1.024 µs, a shift where µs would take a division. */
#define SYN_TIME_SHIFT 10
/* A SYN older than this is no handshake's start: the SYN-ACK's
 * retransmissions give up after about 63 s (tcp_synack_retries 5). */
#define SYN_MAX_AGE ((75ULL * 1000000000ULL) >> SYN_TIME_SHIFT)

/* Resets sent for segments no connection took, by (netns, local port):
 * no socket (a closed port), a listener's, a time-wait or a request
 * socket's. Linux 6.10+ (handle_reset_no_conn). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	/* Not preallocated: user space deletes idle entries, and a deleted
	 * element is freed after RCU, never reused under an add in flight
	 * (which would count for another port). */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 4096);
	__type(key, struct listener_key);
	__type(value, __u64);
} port_resets SEC(".maps");

/* Resets of port_resets not counted there: it was full. */
__u64 port_resets_full;

/* Force BTF for the record type, which bpf2go turns into a Go struct. */
const struct conn_record *unused_conn_record __attribute__((unused));

static __always_inline bool is_v4mapped(const __u8 *a)
{
	__u32 w0, w1, w2;
	__builtin_memcpy(&w0, a, 4);
	__builtin_memcpy(&w1, a + 4, 4);
	__builtin_memcpy(&w2, a + 8, 4);
	return w0 == 0 && w1 == 0 && w2 == bpf_htonl(0x0000ffff);
}

static __always_inline void unmap_v4(__u8 *a)
{
	__builtin_memcpy(a, a + 12, 4);
	__builtin_memset(a + 4, 0, 12);
}

/* SK_FIELD reads a field of a kernel object. Programs with BTF-typed
 * arguments (tp_btf, iterators) read it directly; kprobes hold a plain
 * pointer and must probe-read it with a CO-RE relocation. `probed` is a
 * compile-time constant at every call, so each program keeps one branch. */
#define SK_FIELD(probed, sk, ...) ((probed) ? BPF_CORE_READ(sk, __VA_ARGS__) : DIRECT_READ(sk, __VA_ARGS__))
#define DIRECT_READ(sk, ...) ___direct_read(sk, ##__VA_ARGS__, ___dr3, ___dr2, ___dr1)(sk, __VA_ARGS__)
#define ___direct_read(sk, a, b, c, N, ...) N
#define ___dr1(sk, a) ((sk)->a)
#define ___dr2(sk, a, b) ((sk)->a->b)
#define ___dr3(sk, a, b, c) ((sk)->a->b->c)

static __always_inline void sk_copy16(__u8 *dst, const void *src, bool probed)
{
	if (probed)
		bpf_probe_read_kernel(dst, 16, src);
	else
		__builtin_memcpy(dst, src, 16);
}

/* read_endpoints_of fills addresses, ports, netns and family; false for a
 * socket that is not traced (not IPv4/IPv6, or IPv6 when disabled).
 * IPv4-mapped IPv6 sockets carry IPv4 traffic and are reported as IPv4. */
static __always_inline bool read_endpoints_of(struct sock *sk, struct endpoints *st, bool probed)
{
	__u16 family = SK_FIELD(probed, sk, __sk_common.skc_family);

	st->sport = SK_FIELD(probed, sk, __sk_common.skc_num);
	st->dport = bpf_ntohs(SK_FIELD(probed, sk, __sk_common.skc_dport));
	st->netns = SK_FIELD(probed, sk, __sk_common.skc_net.net, ns.inum);
	__builtin_memset(st->saddr, 0, sizeof(st->saddr));
	__builtin_memset(st->daddr, 0, sizeof(st->daddr));
	if (family == AF_INET) {
		__be32 s = SK_FIELD(probed, sk, __sk_common.skc_rcv_saddr);
		__be32 d = SK_FIELD(probed, sk, __sk_common.skc_daddr);
		__builtin_memcpy(st->saddr, &s, 4);
		__builtin_memcpy(st->daddr, &d, 4);
		st->family = AF_INET;
		return true;
	}
	if (family != AF_INET6)
		return false;
	sk_copy16(st->saddr, &sk->__sk_common.skc_v6_rcv_saddr, probed);
	sk_copy16(st->daddr, &sk->__sk_common.skc_v6_daddr, probed);
	if (is_v4mapped(st->saddr) && is_v4mapped(st->daddr)) {
		unmap_v4(st->saddr);
		unmap_v4(st->daddr);
		st->family = AF_INET;
		return true;
	}
	if (!collect_ipv6)
		return false;
	st->family = AF_INET6;
	return true;
}

static __always_inline bool read_endpoints(struct sock *sk, struct endpoints *st)
{
	return read_endpoints_of(sk, st, false);
}

static __always_inline bool is_tcp(struct sock *sk)
{
	return sk->sk_protocol == IPPROTO_TCP;
}

#include "filter.h"
#include "cgroup.h"

/* read_chrono reads what limited the connection's sending so far, as
 * TCP_INFO does (tcp_get_info_chrono_stats): the jiffies it spent in each
 * of enum tcp_chrono's states (1 busy, 2 limited by the peer's receive
 * window, 3 by the send buffer), the running one up to now. It says
 * whether the running period is in (whole).
 *
 * Exact under the socket lock (the close, iter/tcp). A task_file live
 * read does not hold it: tcp_chrono_set() may run on another CPU
 * meanwhile (adds the period to chrono_stat, then sets chrono_start, then
 * chrono_type). The running period is added only if the type and start
 * read before the stats are still there after them, and now is read last
 * (a start after it would make a negative period: 2^32 jiffies in u32);
 * otherwise the stats alone, which only ever hold finished periods: low,
 * never high. A writer caught between its two stores (the stats updated,
 * the start not yet) passes that check and counts its period twice:
 * cap_chrono bounds what that adds. */
static __always_inline bool read_chrono(struct tcp_sock *tp, __u32 *out)
{
	__u32 type = BPF_CORE_READ_BITFIELD(tp, chrono_type);
	__u32 start = READ_ONCE(tp->chrono_start);
	__u32 now;
	__s32 running;

	barrier();
	out[0] = READ_ONCE(tp->chrono_stat[0]);
	out[1] = READ_ONCE(tp->chrono_stat[1]);
	out[2] = READ_ONCE(tp->chrono_stat[2]);
	barrier();
	if (READ_ONCE(tp->chrono_start) != start || BPF_CORE_READ_BITFIELD(tp, chrono_type) != type)
		return false;
	now = bpf_jiffies64(); /* tcp_jiffies32: the low 32 bits */
	running = (__s32)(now - start);
	if (running <= 0)
		return true;
	/* Constant indexes: older verifiers (6.1) refuse a variable offset
	 * into the stack. */
	if (type == 1)
		out[0] += running;
	else if (type == 2)
		out[1] += running;
	else if (type == 3)
		out[2] += running;
	return true;
}

/* cap_chrono bounds a whole live read: each time grows by at most the
 * jiffies since the last whole read (one chrono runs at a time), which
 * it then becomes. A read racing the kernel's update could otherwise
 * count a period twice, and the tracer keeps a counter's largest value
 * for good. */
static __always_inline void cap_chrono(struct conn_state *st, __u32 *chrono)
{
	__u32 now = bpf_jiffies64();
	__u32 room = now - st->chrono_at + 1, d;

	for (int i = 0; i < 3; i++) {
		/* Unsigned: growth up to 2^32 jiffies; a value behind the
		 * last (d in the top quarter: a wrap backwards) is left. */
		d = chrono[i] - st->chrono_seen[i];
		if (d < 0xC0000000u && d > room)
			chrono[i] = st->chrono_seen[i] + room;
		st->chrono_seen[i] = chrono[i];
	}
	st->chrono_at = now;
}

/* since32 is a u32 counter's growth since base, across a wrap (2^32
 * jiffies); 0 if base is ahead by a little (a base read high, racing the
 * kernel: the difference in the top quarter). */
static __always_inline __u32 since32(__u32 v, __u32 base)
{
	__u32 d = v - base;

	return d >= 0xC0000000u ? 0 : d;
}

static __always_inline void take_baselines(struct tcp_sock *tp, struct conn_state *st, bool retrans)
{
	st->base_acked = tp->bytes_acked;
	st->base_received = tp->bytes_received;
	/* New connections report every retransmission, SYN ones too, as
	 * TCP_INFO's tcpi_total_retrans does; pre-existing ones from now on. */
	st->base_retrans = retrans ? tp->total_retrans : 0;
	st->base_segs_out = retrans ? tp->data_segs_out : 0;
	st->base_bytes_retrans = retrans ? tp->bytes_retrans : 0;
	st->base_dsack = retrans ? tp->dsack_dups : 0;
	st->base_reord = retrans ? tp->reord_seen : 0;
	st->base_ooo = retrans ? tp->rcv_ooopack : 0;
	st->base_ce = retrans ? tp->delivered_ce : 0;
	if (retrans)
		read_chrono(tp, st->base_chrono);
	else
		__builtin_memset(st->base_chrono, 0, sizeof(st->base_chrono));
	__builtin_memcpy(st->chrono_seen, st->base_chrono, sizeof(st->chrono_seen));
	st->chrono_at = bpf_jiffies64();
}

/* start_conn begins tracking sk, if the filters let it and within the
 * max_tracked budget. */
static __always_inline struct conn_state *start_conn(struct sock *sk, __u8 direction, __u32 pid,
						      const char *comm)
{
	struct conn_state *st = bpf_sk_storage_get(&conns, sk, 0, 0);
	struct endpoints ends;
	__u64 cgroup;
	__u32 gen = 0;

	if (st) {
		if (!(st->flags & CONN_CLOSED))
			return st; /* already tracked */
		gen = st->gen + 1; /* socket reused for a new connection */
		/* Its resets are no longer the previous connection's, whether
		 * or not this one is traced. */
		st->recorded = 0;
	}
	if (!read_endpoints(sk, &ends) || !traced(&ends, ends.daddr, ends.dport, ends.family, IPPROTO_TCP) ||
	    !sk_cgroup_id(sk, false, &cgroup))
		return NULL;
	if (__sync_fetch_and_add(&tracked, 1) >= max_tracked) {
		__sync_fetch_and_add(&tracked, -1);
		__sync_fetch_and_add(&lost_tracked_full, 1);
		return NULL;
	}
	if (!st)
		st = bpf_sk_storage_get(&conns, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st) {
		__sync_fetch_and_add(&tracked, -1);
		/* Lost a creation race: another CPU tracks it. Else not traced,
		 * and counted. */
		if (!bpf_sk_storage_get(&conns, sk, 0, 0))
			__sync_fetch_and_add(&lost_storage, 1);
		return NULL;
	}
	__builtin_memset(st, 0, sizeof(*st));
	st->e = ends;
	st->gen = gen;
	st->cookie = bpf_get_socket_cookie(sk);
	st->start_ns = bpf_ktime_get_ns();
	st->direction = direction;
	st->pid = pid;
	st->cgroup = cgroup;
	__builtin_memcpy(st->comm, comm, COMM_LEN);
	return st;
}

/*
 * sent_payload: bytes_acked counts the SYN (removed by the baseline) and our
 * FIN once acknowledged. The FIN is queued only in FIN_WAIT1, FIN_WAIT2,
 * CLOSING and LAST_ACK (any later state comes from one of those), and is
 * acknowledged when snd_una reaches write_seq. `state` is the state the socket
 * was in (the old state at CLOSE). A live read (not final) races the kernel,
 * so in states where the FIN may be acknowledged it assumes it is: a live
 * value is never above the truth, and the final one is exact.
 */
static __always_inline __u64 sent_payload(struct tcp_sock *tp, struct conn_state *st, int state, bool final)
{
	__u32 una = tp->snd_una;
	__u32 wseq = tp->write_seq;
	__u64 acked = tp->bytes_acked;
	__u64 fin = 0;

	switch (state) {
	case TCP_FIN_WAIT2:
	case TCP_TIME_WAIT:
		fin = 1;
		break;
	case TCP_FIN_WAIT1:
	case TCP_CLOSING:
	case TCP_LAST_ACK:
		fin = final ? (una == wseq) : 1;
		break;
	}
	if (acked < st->base_acked + fin)
		return 0;
	return acked - st->base_acked - fin;
}

/*
 * recv_payload: bytes_received counts the peer's FIN once it arrived in
 * order; tcp_fin() then sets SOCK_DONE. The flag is read before the counter
 * (the kernel writes them the other way round), so a read that sees the flag
 * sees the FIN counted.
 */
static __always_inline __u64 recv_payload(struct sock *sk, struct tcp_sock *tp, struct conn_state *st)
{
	unsigned long flags = READ_ONCE(sk->__sk_common.skc_flags);
	__u64 received;

	barrier();
	received = READ_ONCE(tp->bytes_received);
	__u64 fin = (flags >> bpf_core_enum_value(enum sock_flags, SOCK_DONE)) & 1;

	if (received < st->base_received + fin)
		return 0;
	return received - st->base_received - fin;
}

/* since is a counter's value since its baseline, floored at 0. */
#define since(v, base) ({ __typeof__(v) _v = (v); _v > (base) ? _v - (base) : 0; })

/* record_identity writes who the connection is: its cookie, process and
 * endpoints (a record's and an addendum's). */
static __always_inline void record_identity(struct conn_record *rec, struct conn_state *st)
{
	rec->cookie = st->cookie;
	rec->pid = st->pid;
	rec->cgroup = st->cgroup;
	rec->netns = st->e.netns;
	rec->sport = st->e.sport;
	rec->dport = st->e.dport;
	rec->family = st->e.family;
	rec->direction = st->direction;
	__builtin_memcpy(rec->saddr, st->e.saddr, 16);
	__builtin_memcpy(rec->daddr, st->e.daddr, 16);
	__builtin_memcpy(rec->comm, st->comm, COMM_LEN);
}

static __always_inline void fill_record(struct conn_record *rec, struct sock *sk, struct tcp_sock *tp,
					struct conn_state *st, int state, bool final)
{
	record_identity(rec, st);
	rec->ts_ns = bpf_ktime_get_ns();
	rec->start_ns = st->start_ns;
	rec->state = state;
	rec->flags = st->flags;
	rec->gen = st->gen;
	__builtin_memcpy(rec->rtt_buckets, st->rtt_buckets, sizeof(rec->rtt_buckets));
	rec->rtt_sum_us = st->rtt_sum_us;
	rec->err = 0;
	rec->srtt_us = tp->srtt_us >> 3;
	rec->handshake_us = st->handshake_us;
	rec->rtos = st->rtos;
	rec->recoveries = st->recoveries;
	/* Also before ESTABLISHED: a refused connect took a reset. */
	rec->resets_sent = st->resets_sent;
	rec->resets_received = st->resets_received;
	if (!(st->flags & CONN_ESTABLISHED)) {
		rec->sent_bytes = 0;
		rec->recv_bytes = 0;
		rec->retransmits = 0;
		rec->sent_segments = 0;
		rec->retrans_bytes = 0;
		rec->dsacks = 0;
		rec->reorders = 0;
		rec->ooo_packets = 0;
		rec->ce_marks = 0;
		rec->busy_jiffies = 0;
		rec->rwnd_limited_jiffies = 0;
		rec->sndbuf_limited_jiffies = 0;
		return;
	}
	rec->sent_bytes = sent_payload(tp, st, state, final);
	rec->recv_bytes = recv_payload(sk, tp, st);
	rec->retransmits = since(tp->total_retrans, st->base_retrans);
	rec->sent_segments = since(tp->data_segs_out, st->base_segs_out);
	rec->retrans_bytes = since(tp->bytes_retrans, st->base_bytes_retrans);
	rec->dsacks = since(tp->dsack_dups, st->base_dsack);
	rec->reorders = since(tp->reord_seen, st->base_reord);
	rec->ooo_packets = since(tp->rcv_ooopack, st->base_ooo);
	rec->ce_marks = since(tp->delivered_ce, st->base_ce);
	{
		__u32 chrono[3];

		if (read_chrono(tp, chrono) && !final)
			cap_chrono(st, chrono);
		/* u32 jiffies, as the kernel's. */
		rec->rwnd_limited_jiffies = since32(chrono[1], st->base_chrono[1]);
		rec->sndbuf_limited_jiffies = since32(chrono[2], st->base_chrono[2]);
		rec->busy_jiffies = since32(chrono[0], st->base_chrono[0]) + rec->rwnd_limited_jiffies +
				    rec->sndbuf_limited_jiffies;
	}
	/* Stalled: the peer's window is closed and data waits (unsent, or
	 * sent and not acknowledged: the window probes). Now, so live only. */
	if (!final && !tp->snd_wnd && tp->write_seq != tp->snd_una)
		rec->flags |= CONN_ZERO_WINDOW;
}

/* finish_conn emits the final record and stops tracking. */
static __always_inline void finish_conn(struct sock *sk, struct conn_state *st, int state)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	struct conn_record *rec;
	int err;

	/* Flag first: once user space sees the record, no later iteration
	 * reports the connection as live. */
	st->flags |= CONN_CLOSED;
	__sync_fetch_and_add(&tracked, -1);
	if (!tp)
		return; /* cannot happen: only TCP sockets are tracked */
	rec = bpf_ringbuf_reserve(&closed_conns, sizeof(*rec), 0);
	if (!rec) {
		__sync_fetch_and_add(&lost_ring_buffer_full, 1);
		return;
	}
	fill_record(rec, sk, tp, st, state, true);
	/* Why it ended: the error tcp_reset(), tcp_write_err() or an ICMP
	 * error set before the kernel moved the socket to CLOSE. A connect
	 * that found no free local port (EADDRNOTAVAIL from connect(), not
	 * an error on the socket) leaves SYN_SENT without sending its SYN,
	 * and without the source port a successful __inet_hash_connect()
	 * writes (inet_sport: the port number itself, inet_num, is released
	 * before this state change, for every socket). */
	err = READ_ONCE(sk->sk_err);
	rec->err = err > 0 && err < 0xffff ? err : (err ? 0xffff : 0);
	if (!(st->flags & CONN_ESTABLISHED) && !tp->segs_out && !tp->inet_conn.icsk_inet.inet_sport)
		rec->flags |= CONN_NO_LOCAL_PORT;
	st->recorded = 1;
	/* No wakeup: user space drains the ring on every scrape and every
	 * 100 ms, and a wakeup costs a self-IPI, about as much as the rest of
	 * this program (BENCHMARKS.md). */
	bpf_ringbuf_submit(rec, BPF_RB_NO_WAKEUP);
}

/* listener_add counts one more listening socket on (netns, port); the
 * latest one's process names the port (a rolling restart's new process). */
static __always_inline void listener_add(__u32 netns, __u32 port, __u32 pid, const char *comm, bool mptcp)
{
	struct listener_key key = { .netns = netns, .port = port };
	struct listener nl = { .pid = pid, .socks = 1, .mptcp = mptcp }, *l;

	l = bpf_map_lookup_elem(&listeners, &key);
	if (!l) {
		__builtin_memcpy(nl.comm, comm, COMM_LEN);
		if (!bpf_map_update_elem(&listeners, &key, &nl, BPF_NOEXIST))
			return;
		l = bpf_map_lookup_elem(&listeners, &key); /* another CPU made it */
		if (!l) {
			__sync_fetch_and_add(&listeners_full, 1);
			return;
		}
	}
	__sync_fetch_and_add(&l->socks, 1);
	if (mptcp)
		__sync_fetch_and_add(&l->mptcp, 1);
	l->pid = pid;
	__builtin_memcpy(l->comm, comm, COMM_LEN);
}

/* remember_listener records a listening socket, once however many times
 * the seeding passes see it (several processes may hold it). At its state
 * change (fresh) the socket is new: an entry at its address is stale (an
 * MPTCP listener's, whose own close is never seen) and is replaced. sk is
 * only read (an untrusted pointer in seed_owners). */
static __always_inline void remember_listener(struct sock *sk, __u32 pid, const char *comm, bool fresh)
{
	__u64 addr = (__u64)sk;
	struct listen_sock ls = {
		.netns = sk->__sk_common.skc_net.net->ns.inum,
		.port = sk->__sk_common.skc_num,
		.pid = pid,
	};
	long err;

	__builtin_memcpy(ls.comm, comm, COMM_LEN);
	err = bpf_map_update_elem(&listen_socks, &addr, &ls, fresh ? BPF_ANY : BPF_NOEXIST);
	if (err) {
		if (err != -17 /* EEXIST: counted already */)
			__sync_fetch_and_add(&listeners_full, 1);
		return;
	}
	if (ls.port)
		listener_add(ls.netns, ls.port, pid, comm, sk->sk_protocol == IPPROTO_MPTCP);
}

/* forget_listener: a listening socket closed. One not recorded may be the
 * TCP listener inside an MPTCP one that the seeding pass recorded (the
 * MPTCP socket, which holds it: same port and netns): it counts only if
 * the port has such a listener. */
static __always_inline void forget_listener(struct sock *sk)
{
	__u64 addr = (__u64)sk;
	struct listen_sock *ls = bpf_map_lookup_elem(&listen_socks, &addr);
	struct listener_key key = {
		.netns = sk->__sk_common.skc_net.net->ns.inum,
		.port = sk->__sk_common.skc_num,
	};
	struct listener *l;

	if (ls) {
		key.netns = ls->netns;
		key.port = ls->port;
		bpf_map_delete_elem(&listen_socks, &addr);
	}
	if (!key.port)
		return;
	l = bpf_map_lookup_elem(&listeners, &key);
	if (!l)
		return;
	if (!ls) {
		if (!l->mptcp)
			return; /* not ours to count: never recorded (the map was full) */
		__sync_fetch_and_add(&l->mptcp, -1);
	}
	if (__sync_fetch_and_add(&l->socks, -1) <= 1)
		bpf_map_delete_elem(&listeners, &key);
}

#define rol32(x, k) (((x) << (k)) | ((x) >> (32 - (k))))
/* Bob Jenkins' lookup3, as the kernel's jhash2 (include/linux/jhash.h):
 * the hash the kernel keys its own connection tables with. */
#define jhash_mix(a, b, c)                       \
	{                                        \
		a -= c; a ^= rol32(c, 4);  c += b; \
		b -= a; b ^= rol32(a, 6);  a += c; \
		c -= b; c ^= rol32(b, 8);  b += a; \
		a -= c; a ^= rol32(c, 16); c += b; \
		b -= a; b ^= rol32(a, 19); a += c; \
		c -= b; c ^= rol32(b, 4);  b += a; \
	}
#define jhash_final(a, b, c)                     \
	{                                        \
		c ^= b; c -= rol32(b, 14);         \
		a ^= c; a -= rol32(c, 11);         \
		b ^= a; b -= rol32(a, 25);         \
		c ^= b; c -= rol32(b, 16);         \
		a ^= c; a -= rol32(c, 4);          \
		b ^= a; b -= rol32(a, 14);         \
		c ^= b; c -= rol32(b, 24);         \
	}

/* syn_hash is the hash of a SYN's endpoints with syn_seed: its low 16
 * bits choose the slot, the high 16 are its tag. IPv4: the final mix of
 * the addresses and ports, as the kernel's jhash_3words (inet_ehashfn),
 * the seed in one word; IPv6: jhash2 of the ten words. */
static __always_inline __u32 syn_hash(const struct syn_key *k)
{
	__u32 w[10], a, b, c;

	_Static_assert(sizeof(*k) == sizeof(w), "syn_key is ten words");
	__builtin_memcpy(w, k, sizeof(w));
	if (k->family == AF_INET) {
		a = w[0] + 0xdeadbeef;
		b = w[4] + 0xdeadbeef;
		c = w[8] + syn_seed;
		jhash_final(a, b, c);
		return c;
	}
	a = b = c = 0xdeadbeef + (10 << 2) + syn_seed;
	a += w[0]; b += w[1]; c += w[2];
	jhash_mix(a, b, c);
	a += w[3]; b += w[4]; c += w[5];
	jhash_mix(a, b, c);
	a += w[6]; b += w[7]; c += w[8];
	jhash_mix(a, b, c);
	a += w[9];
	jhash_final(a, b, c);
	return c;
}

/* elapsed_us is the time since t0 (bpf_ktime_get_ns) in µs, at least 1:
 * 0 says unknown. */
static __always_inline __u32 elapsed_us(__u64 t0)
{
	__u64 us = (bpf_ktime_get_ns() - t0) / 1000;

	if (us < 1)
		return 1;
	return us > 0xffffffff ? 0xffffffff : us;
}

/* handshake_from_syn returns the handshake of a passive open whose
 * endpoints are ends: from its SYN, which handle_sockops timed when the
 * request socket was made, to now; 0 when unknown (a SYN cookie, TCP
 * Fast Open, evicted, or before start-up). Its entry goes. */
static __always_inline __u32 handshake_from_syn(struct endpoints *ends)
{
	struct syn_key key = { .sport = ends->sport, .dport = ends->dport, .family = ends->family };
	__u64 *slot, v, now;
	__u32 h, idx;

	__builtin_memcpy(key.saddr, ends->saddr, 16);
	__builtin_memcpy(key.daddr, ends->daddr, 16);
	h = syn_hash(&key);
	idx = h & (SYN_SLOTS - 1);
	slot = bpf_map_lookup_elem(&syn_times, &idx);
	if (!slot)
		return 0;
	v = READ_ONCE(*slot);
	if (!v || (v & 0xffff) != h >> 16)
		return 0; /* another handshake's slot now, or none */
	/* Taken only if still this entry: a SYN that took the slot since
	 * keeps it. */
	if (__sync_val_compare_and_swap(slot, v, 0) != v)
		return 0;
	/* 48 bits of 1.024 µs units: 9 years of uptime, then they wrap;
	 * the difference is taken in 48 bits. */
	now = bpf_ktime_get_ns() >> SYN_TIME_SHIFT;
	v = (now - (v >> 16)) & ((1ULL << 48) - 1);
	if (v > SYN_MAX_AGE)
		return 0;
	/* Units of 1.024 µs to µs (1049/1024: 0.04 % over), no division. */
	v = (v * 1049) >> 10;
	return v < 1 ? 1 : v;
}

static __always_inline struct listener *find_listener(struct endpoints *e)
{
	struct listener_key key = { .netns = e->netns, .port = e->sport };

	return bpf_map_lookup_elem(&listeners, &key);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(handle_set_state, const struct sock *csk, const int oldstate, const int newstate)
{
	struct sock *sk = (struct sock *)csk;
	struct conn_state *st;
	struct tcp_sock *tp;
	char comm[COMM_LEN];

	if (!is_tcp(sk))
		return 0;

	switch (newstate) {
	case TCP_LISTEN:
		bpf_get_current_comm(comm, sizeof(comm));
		remember_listener(sk, bpf_get_current_pid_tgid() >> 32, comm, true);
		return 0;
	case TCP_SYN_SENT:
		/* connect(): process context, the PID is the connecting process. */
		bpf_get_current_comm(comm, sizeof(comm));
		start_conn(sk, DIR_OUTGOING, bpf_get_current_pid_tgid() >> 32, comm);
		return 0;
	case TCP_ESTABLISHED:
		st = bpf_sk_storage_get(&conns, sk, 0, 0);
		if (oldstate == TCP_SYN_RECV && (!st || (st->flags & CONN_CLOSED))) {
			/* Passive open, in softirq: the PID is the listener's. */
			struct endpoints tmp = {};
			struct listener *l;
			__u32 handshake;

			if (!read_endpoints(sk, &tmp))
				return 0;
			/* Taken out of syn_times whether traced or not: an entry
			 * left stays in its slot until another SYN takes it, and
			 * within 75 s the same four-tuple's next handshake
			 * without a SYN of its own (a SYN cookie's) would take
			 * it for its start. */
			handshake = time_incoming ? handshake_from_syn(&tmp) : 0;
			l = find_listener(&tmp);
			if (l)
				st = start_conn(sk, DIR_INCOMING, l->pid, l->comm);
			else {
				__builtin_memset(comm, 0, sizeof(comm));
				st = start_conn(sk, DIR_INCOMING, 0, comm);
			}
			if (st && !(st->flags & CONN_CLOSED))
				st->handshake_us = handshake;
		}
		if (!st || (st->flags & CONN_CLOSED))
			return 0;
		/* connect() picks the local port after SYN_SENT: read the local
		 * side again, and filter again now that it is known. */
		if (oldstate == TCP_SYN_SENT) {
			struct endpoints tmp;

			if (read_endpoints(sk, &tmp)) {
				__builtin_memcpy(st->e.saddr, tmp.saddr, 16);
				st->e.sport = tmp.sport;
			}
			if (!traced(&st->e, st->e.daddr, st->e.dport, st->e.family, IPPROTO_TCP)) {
				st->flags |= CONN_CLOSED; /* untracked, silently: filtered out */
				__sync_fetch_and_add(&tracked, -1);
				return 0;
			}
		}
		tp = bpf_skc_to_tcp_sock(sk);
		if (!tp)
			return 0;
		take_baselines(tp, st, false);
		/* An active open: tracked since its SYN_SENT, unless a seeding
		 * pass found it connecting. */
		if (oldstate == TCP_SYN_SENT && !(st->flags & CONN_SEEDED))
			st->handshake_us = elapsed_us(st->start_ns);
		st->flags |= CONN_ESTABLISHED;
		return 0;
	case TCP_CLOSE:
		if (oldstate == TCP_LISTEN) {
			forget_listener(sk);
			return 0;
		}
		st = bpf_sk_storage_get(&conns, sk, 0, 0);
		if (st && !(st->flags & CONN_CLOSED))
			finish_conn(sk, st, oldstate);
		return 0;
	}
	return 0;
}

/* A connection enters fast recovery (tcp_enter_recovery; Linux 6.4+,
 * optional): counted for it. */
#define TCP_CA_RECOVERY 3

SEC("tp_btf/tcp_cong_state_set")
int BPF_PROG(handle_cong_state, struct sock *sk, const __u8 ca_state)
{
	struct conn_state *st;

	if (ca_state != TCP_CA_RECOVERY)
		return 0;
	st = bpf_sk_storage_get(&conns, sk, 0, 0);
	/* Not for connections found at start-up: their timeouts are not
	 * counted either (the RTO callback is enabled at establishment), and
	 * the two are compared. */
	if (st && !(st->flags & (CONN_CLOSED | CONN_PREEXISTING)))
		__sync_fetch_and_add(&st->recoveries, 1);
	return 0;
}

/* late_reset records a reset sent after the connection's final record:
 * close() with unread data, SO_LINGER 0 (tcp_disconnect) and an orphan's
 * abort move the socket to CLOSE first, then send the reset. An addendum
 * record carries it: the connection's identity, a key of its own, and
 * that one reset. */
static __always_inline void late_reset(struct conn_state *st)
{
	struct conn_record *rec;

	if (st->addenda >= 127)
		return;
	rec = bpf_ringbuf_reserve(&closed_conns, sizeof(*rec), 0);
	if (!rec) {
		__sync_fetch_and_add(&lost_ring_buffer_full, 1);
		return;
	}
	__builtin_memset(rec, 0, sizeof(*rec));
	st->addenda++;
	record_identity(rec, st);
	rec->gen = st->gen | ADDENDUM_GEN | ((__u32)st->addenda << 24);
	rec->ts_ns = bpf_ktime_get_ns();
	rec->start_ns = rec->ts_ns;
	rec->state = TCP_CLOSE;
	rec->flags = CONN_ESTABLISHED | CONN_CLOSED | CONN_PREEXISTING | CONN_ADDENDUM;
	rec->resets_sent = 1;
	bpf_ringbuf_submit(rec, BPF_RB_NO_WAKEUP);
}

/* This host sends a reset (tcp_v4/v6_send_reset for a segment, or
 * tcp_send_active_reset): counted for the connection. Linux 6.10+ also
 * calls it without a full socket (handle_reset_no_conn counts those):
 * bpf_sk_storage_get finds nothing for them. */
SEC("tp_btf/tcp_send_reset")
int BPF_PROG(handle_send_reset, const struct sock *csk)
{
	struct conn_state *st;

	/* NULL: no socket took the segment (Linux 6.10+; the verifier of
	 * newer kernels knows it may be). */
	if (!csk)
		return 0;
	st = bpf_sk_storage_get(&conns, (struct sock *)csk, 0, 0);
	if (!st)
		return 0;
	if (!(st->flags & CONN_CLOSED))
		__sync_fetch_and_add(&st->resets_sent, 1);
	else if (st->recorded && csk->__sk_common.skc_state == TCP_CLOSE)
		late_reset(st);
	return 0;
}

/* A connection takes a reset (tcp_reset(): a valid RST came, or the
 * kernel aborts it for data received after shutdown, RFC 1122, and
 * sends one too). Before the move to CLOSE. */
SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(handle_receive_reset, struct sock *sk)
{
	struct conn_state *st = bpf_sk_storage_get(&conns, sk, 0, 0);

	if (st && !(st->flags & CONN_CLOSED))
		__sync_fetch_and_add(&st->resets_received, 1);
	return 0;
}

extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;

/* A reset for a segment no connection took (Linux 6.10+, where the
 * tracepoint fires for them too): no socket on the port (sk NULL: the
 * port and namespace are the segment's, its TCP header at skb->data),
 * or a listener's, a time-wait or a request socket's (theirs). Counted
 * per (netns, local port). */
SEC("tp_btf/tcp_send_reset")
int BPF_PROG(handle_reset_no_conn, const struct sock *sk, const struct sk_buff *skb)
{
	struct listener_key key = {};
	__u64 one = 1, *n;
	int state = 0;

	if (sk)
		state = sk->__sk_common.skc_state;
	switch (state) {
	case 0: {
		const struct tcphdr *th;

		if (!skb)
			return 0;
		/* Read-only, through the kernel's type: no helper reads
		 * kernel memory (lockdown=confidentiality refuses those). */
		th = bpf_rdonly_cast(skb->data, bpf_core_type_id_kernel(struct tcphdr));
		key.port = bpf_ntohs(th->dest);
		key.netns = skb->dev->nd_net.net->ns.inum;
		break;
	}
	case TCP_LISTEN:
	case TCP_TIME_WAIT:
	case TCP_NEW_SYN_RECV:
		key.port = sk->__sk_common.skc_num;
		key.netns = sk->__sk_common.skc_net.net->ns.inum;
		break;
	default:
		return 0; /* a full socket's: handle_send_reset */
	}
	n = bpf_map_lookup_elem(&port_resets, &key);
	if (n) {
		__sync_fetch_and_add(n, 1);
		return 0;
	}
	if (bpf_map_update_elem(&port_resets, &key, &one, BPF_NOEXIST)) {
		n = bpf_map_lookup_elem(&port_resets, &key); /* another CPU made it */
		if (n)
			__sync_fetch_and_add(n, 1);
		else
			__sync_fetch_and_add(&port_resets_full, 1);
	}
	return 0;
}

/* A listener retransmits a SYN-ACK: counted for its port. (For a TCP Fast
 * Open child, the child's port and namespace are its listener's.) */
SEC("tp_btf/tcp_retransmit_synack")
int BPF_PROG(handle_synack_retrans, const struct sock *sk, const struct request_sock *req)
{
	struct listener_key key = {
		.netns = sk->__sk_common.skc_net.net->ns.inum,
		.port = sk->__sk_common.skc_num,
	};
	struct listener *l = bpf_map_lookup_elem(&listeners, &key);

	if (l)
		__sync_fetch_and_add(&l->synack_retrans, 1);
	return 0;
}

SEC("tp_btf/tcp_destroy_sock")
int BPF_PROG(handle_destroy_sock, struct sock *sk)
{
	struct conn_state *st = bpf_sk_storage_get(&conns, sk, 0, 0);

	if (st && !(st->flags & CONN_CLOSED))
		finish_conn(sk, st, sk->__sk_common.skc_state);
	return 0;
}

/* log2_bucket returns the smallest i with v <= 2^i, capped to the last bucket. */
static __always_inline __u32 log2_bucket(__u32 v)
{
	__u32 r = 0, s;

	if (v <= 1)
		return 0;
	v--;
	s = (v > 0xFFFF) << 4; v >>= s; r |= s;
	s = (v > 0xFF) << 3;   v >>= s; r |= s;
	s = (v > 0xF) << 2;    v >>= s; r |= s;
	s = (v > 0x3) << 1;    v >>= s; r |= s;
	r |= (v >> 1);
	r += 1;
	return r < RTT_BUCKETS ? r : RTT_BUCKETS - 1;
}

/* time_syn remembers when the SYN of a request socket came, keyed as the
 * child's endpoints will read (read_endpoints). */
static __always_inline void time_syn(struct bpf_sock_ops *skops)
{
	struct syn_key key = { .sport = skops->local_port, .dport = bpf_ntohl(skops->remote_port) };
	__u64 now = bpf_ktime_get_ns(), *slot;
	__u32 h, idx;

	if (skops->family == AF_INET) {
		__u32 l = skops->local_ip4, r = skops->remote_ip4;

		__builtin_memcpy(key.saddr, &l, 4);
		__builtin_memcpy(key.daddr, &r, 4);
		key.family = AF_INET;
	} else if (skops->family == AF_INET6) {
		__u32 l[4] = { skops->local_ip6[0], skops->local_ip6[1], skops->local_ip6[2], skops->local_ip6[3] };
		__u32 r[4] = { skops->remote_ip6[0], skops->remote_ip6[1], skops->remote_ip6[2], skops->remote_ip6[3] };

		__builtin_memcpy(key.saddr, l, 16);
		__builtin_memcpy(key.daddr, r, 16);
		key.family = AF_INET6;
		if (is_v4mapped(key.saddr) && is_v4mapped(key.daddr)) {
			unmap_v4(key.saddr);
			unmap_v4(key.daddr);
			key.family = AF_INET;
		}
	} else {
		return;
	}
	if (key.family == AF_INET6 && !collect_ipv6)
		return; /* not traced: nothing would take it */
	h = syn_hash(&key);
	idx = h & (SYN_SLOTS - 1);
	slot = bpf_map_lookup_elem(&syn_times, &idx);
	if (slot)
		*slot = (now >> SYN_TIME_SHIFT) << 16 | h >> 16; /* one aligned store */
}

/* sockops_conn is the state of the callback's socket, if it is a tracked
 * connection not closed. */
static __always_inline struct conn_state *sockops_conn(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	struct conn_state *st;

	if (!sk)
		return NULL;
	st = bpf_sk_storage_get(&conns, sk, 0, 0);
	if (!st || (st->flags & CONN_CLOSED))
		return NULL;
	return st;
}

SEC("sockops")
int handle_sockops(struct bpf_sock_ops *skops)
{
	struct conn_state *st;
	struct bpf_sock *sk;
	__u32 mrtt, b;

	switch (skops->op) {
	case BPF_SOCK_OPS_TCP_LISTEN_CB: {
		/* After listen() bound the socket: a socket listening without
		 * bind() had port 0 at its state change. */
		struct listen_sock *ls;
		__u64 addr;

		sk = skops->sk;
		if (!sk)
			break;
		addr = (__u64)sk;
		ls = bpf_map_lookup_elem(&listen_socks, &addr);
		if (ls && !ls->port) {
			ls->port = skops->local_port;
			listener_add(ls->netns, ls->port, ls->pid, ls->comm, false);
		}
		break;
	}
	case BPF_SOCK_OPS_TIMEOUT_INIT:
		/* Also called for a request socket, when a listener takes a
		 * SYN (tcp_conn_request): when the passive handshake starts.
		 * Not with SYN cookies (no request socket is kept). */
		if (!skops->is_fullsock && time_incoming)
			time_syn(skops);
		break;
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_RTT_CB_FLAG |
						 BPF_SOCK_OPS_RTO_CB_FLAG);
		break;
	case BPF_SOCK_OPS_RTO_CB:
		/* Each time the retransmission timer fires (tcp_write_timeout),
		 * the last one too, which gives up. */
		st = sockops_conn(skops);
		if (st)
			__sync_fetch_and_add(&st->rtos, 1);
		break;
	case BPF_SOCK_OPS_RTT_CB:
		st = sockops_conn(skops);
		if (!st)
			break;
		/* The kernel calls this once per round trip (when the ACKs
		 * pass rtt_seq, in tcp_rtt_estimator()), not for every
		 * sample, and before it stores the new srtt. Since Linux 6.10
		 * args[0] is that round trip's sample; before, only the
		 * smoothed RTT is there (without this sample). The socket
		 * lock serialises these updates. */
		if (rtt_sample_arg)
			mrtt = skops->args[0];
		else
			mrtt = skops->srtt_us >> 3;
		b = log2_bucket(mrtt);
		/* Bound the index where older verifiers (6.1) can see it. */
		barrier_var(b);
		st->rtt_buckets[b & (RTT_BUCKETS - 1)]++;
		st->rtt_sum_us += mrtt;
		break;
	}
	return 1;
}

#include "udp.h"
#include "udp_kprobe.h"
#include "udp_fentry.h"
#include "dns.h"

static __always_inline bool seedable_state(int state)
{
	switch (state) {
	case TCP_ESTABLISHED:
	case TCP_SYN_SENT:
	case TCP_FIN_WAIT1:
	case TCP_FIN_WAIT2:
	case TCP_CLOSE_WAIT:
	case TCP_LAST_ACK:
	case TCP_CLOSING:
		return true;
	}
	return false;
}

static __always_inline struct sock *task_file_tcp_sock(struct bpf_iter__task_file *ctx)
{
	struct socket *sock;
	struct sock *sk;

	if (!ctx->file || !ctx->task)
		return NULL;
	sock = bpf_sock_from_file(ctx->file);
	if (!sock)
		return NULL;
	sk = sock->sk;
	if (!sk || !is_tcp(sk))
		return NULL;
	return sk;
}

/* seed_conn starts tracking sk, a connection that existed before start-up,
 * held by process pid. A socket bound to a port something listens on in its
 * netns was accepted. */
static __always_inline int seed_conn(struct sock *sk, __u32 pid, const char *comm)
{
	struct endpoints tmp = {};
	struct conn_state *st;
	struct tcp_sock *tp;
	int state;
	__u8 dir;

	state = sk->__sk_common.skc_state;
	if (!seedable_state(state))
		return 0;
	if (bpf_sk_storage_get(&conns, sk, 0, 0))
		return 0; /* already tracked, or shared by several processes */
	if (!read_endpoints(sk, &tmp))
		return 0;
	dir = find_listener(&tmp) ? DIR_INCOMING : DIR_OUTGOING;
	st = start_conn(sk, dir, pid, comm);
	if (st && state == TCP_SYN_SENT)
		st->flags |= CONN_SEEDED;
	if (!st || state == TCP_SYN_SENT)
		return 0; /* a SYN_SENT socket gets its baselines at ESTABLISHED */
	tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return 0;
	take_baselines(tp, st, true);
	st->flags |= CONN_ESTABLISHED | CONN_PREEXISTING;
	return 0;
}

/* Second seeding pass: connections that existed before start-up. */
SEC("iter/task_file")
int seed_conns(struct bpf_iter__task_file *ctx)
{
	struct sock *sk = task_file_tcp_sock(ctx);
	struct task_struct *task = ctx->task;

	if (!sk || !task)
		return 0;
	return seed_conn(sk, task->tgid, task->comm);
}

/* First seeding pass: listeners held by any process, in any netns. */
SEC("iter/task_file")
int seed_listeners(struct bpf_iter__task_file *ctx)
{
	struct task_struct *task = ctx->task;
	struct socket *sock;
	struct sock *sk;
	__u16 proto;

	if (!ctx->file || !task)
		return 0;
	sock = bpf_sock_from_file(ctx->file);
	if (!sock)
		return 0;
	sk = sock->sk;
	if (!sk)
		return 0;
	/* An MPTCP listener (Go listens with MPTCP by default since 1.24)
	 * holds the TCP listener inside; it has the same port and netns, and
	 * its accepted fallback connections are plain TCP sockets. */
	proto = sk->sk_protocol;
	if (proto == IPPROTO_UDP)
		bpf_get_socket_cookie(sk); /* made now, for the UDP kprobes (udp.h, sk_cookie) */
	if (proto != IPPROTO_TCP && proto != IPPROTO_MPTCP)
		return 0;
	if (sk->__sk_common.skc_state == TCP_LISTEN)
		remember_listener(sk, task->tgid, task->comm, false);
	return 0;
}

/* The process holding a socket, for the iter/tcp programs (tcp_iter.h),
 * which are not handed one. */
struct owner {
	__u32 tgid;
	char comm[COMM_LEN];
};

/* Socket address -> a process holding it, from seed_owners. Bounded (LRU):
 * only connections accepted before their listener was known need it. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct owner);
} owners SEC(".maps");

/* dump_conn writes the live counters of sk, if tracked, to the iterator's
 * output, once per iteration (session). A connection without a process yet
 * (accepted before its listener was known) takes the one that holds it:
 * pid and comm (task_file), or, if pid is 0, the owners entry of the
 * socket's address (iter/tcp). That entry is looked up only then: a hash
 * lookup for every socket at every scrape cost ~100 ns per socket
 * (BENCHMARKS.md §13). */
static __always_inline int dump_conn(struct sock *sk, struct bpf_iter_meta *meta, __u32 pid, const char *comm)
{
	struct conn_state *st;
	struct conn_record *rec;
	struct tcp_sock *tp;
	struct owner *o;
	__u64 session, addr;
	__u32 zero = 0;
	int state;

	st = bpf_sk_storage_get(&conns, sk, 0, 0);
	if (!st || (st->flags & CONN_CLOSED))
		return 0;
	session = meta->session_id;
	if (st->dump_session == session)
		return 0;
	if (!st->pid && pid) {
		st->pid = pid;
		__builtin_memcpy(st->comm, comm, COMM_LEN);
	} else if (!st->pid) {
		addr = (__u64)sk;
		o = bpf_map_lookup_elem(&owners, &addr);
		if (o) {
			st->pid = o->tgid;
			__builtin_memcpy(st->comm, o->comm, COMM_LEN);
		}
	}
	/* The state is read before the counters: see sent_payload(). */
	state = READ_ONCE(sk->__sk_common.skc_state);
	barrier();
	if (state == TCP_CLOSE)
		return 0; /* closing right now: its final record is on the ring buffer */
	rec = bpf_map_lookup_elem(&scratch, &zero);
	if (!rec)
		return 0;
	tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return 0;
	fill_record(rec, sk, tp, st, state, false);
	/* Marked only once written: when the seq_file buffer is full the write
	 * fails and the kernel shows this same socket again at the next read(). */
	if (bpf_seq_write(meta->seq, rec, sizeof(*rec)) == 0)
		st->dump_session = session;
	return 0;
}

/* On each scrape: the live counters of every tracked socket a process
 * holds. A socket shared by several descriptors is reported once per
 * iteration. Sockets no process holds (orphans after close(), or not yet
 * accepted) are not visited; user space keeps their last values until their
 * close record arrives. */
SEC("iter/task_file")
int dump_conns(struct bpf_iter__task_file *ctx)
{
	struct sock *sk = task_file_tcp_sock(ctx);
	struct task_struct *task = ctx->task;

	if (!sk || !task)
		return 0;
	return dump_conn(sk, ctx->meta, task->tgid, task->comm);
}

#include "tcp_iter.h"
