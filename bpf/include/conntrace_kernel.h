/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The few kernel and UAPI definitions the tracer needs, written by hand
 * instead of a generated vmlinux.h: kernel structs carry
 * preserve_access_index, so clang records CO-RE relocations and the loader
 * fixes every field offset against the running kernel's BTF. Only names
 * and types matter for them, not layout. The context structs (bpf_sock_ops,
 * bpf_iter__*) are read at fixed offsets, so their layout is the UAPI's.
 */
#ifndef CONNTRACE_KERNEL_H
#define CONNTRACE_KERNEL_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed char __s8;
typedef short __s16;
typedef int __s32;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef _Bool bool;
#define true 1
#define false 0

/* UAPI enums (include/uapi/linux/bpf.h), values are ABI. */
enum {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_LPM_TRIE = 11,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_SK_STORAGE = 24,
	BPF_MAP_TYPE_RINGBUF = 27,
};
enum { BPF_F_NO_PREALLOC = 1, BPF_F_NO_COMMON_LRU = 2 };
enum { BPF_ANY = 0, BPF_NOEXIST = 1, BPF_EXIST = 2 };
enum { BPF_SK_STORAGE_GET_F_CREATE = 1 };
enum { BPF_RB_NO_WAKEUP = 1, BPF_RB_FORCE_WAKEUP = 2 };
enum {
	BPF_SOCK_OPS_RTO_CB_FLAG = 1 << 0,
	BPF_SOCK_OPS_RTT_CB_FLAG = 1 << 3,
};
enum {
	BPF_SOCK_OPS_TIMEOUT_INIT = 1, /* also for a request socket: a SYN came */
	BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB = 4,
	BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB = 5,
	BPF_SOCK_OPS_RTO_CB = 8, /* a retransmission timer fired */
	BPF_SOCK_OPS_TCP_LISTEN_CB = 11, /* after listen() bound the socket */
	BPF_SOCK_OPS_RTT_CB = 12,
};

/* include/net/tcp_states.h */
enum {
	TCP_ESTABLISHED = 1,
	TCP_SYN_SENT,
	TCP_SYN_RECV,
	TCP_FIN_WAIT1,
	TCP_FIN_WAIT2,
	TCP_TIME_WAIT,
	TCP_CLOSE,
	TCP_CLOSE_WAIT,
	TCP_LAST_ACK,
	TCP_LISTEN,
	TCP_CLOSING,
	TCP_NEW_SYN_RECV,
};

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define MSG_PEEK 2
#define MSG_ERRQUEUE 0x2000
/* sk_userlocks: the user bound the port explicitly (bind() with a port). */
#define SOCK_BINDPORT_LOCK 8
#define IPPROTO_MPTCP 262

/* enum sock_flags: SOCK_DONE is set by tcp_fin() when the peer's FIN
 * arrives in order. Read with bpf_core_enum_value where it matters. */
enum sock_flags { SOCK_DEAD = 0, SOCK_DONE = 1 };

/* Loads the compiler may neither merge, split nor move across barrier(). */
#define READ_ONCE(x) (*(volatile typeof(x) *)&(x))
#define barrier() asm volatile("" ::: "memory")

#define __bpf_md_ptr(type, name) \
	union {                      \
		type name;               \
		__u64 : 64;              \
	} __attribute__((aligned(8)))

/* The context of cgroup/sock_create (UAPI: fixed offsets). */
struct bpf_sock {
	__u32 bound_dev_if;
	__u32 family;
	__u32 type;
	__u32 protocol;
	__u32 mark;
	__u32 priority;
	__u32 src_ip4;
	__u32 src_ip6[4];
	__u32 src_port; /* host byte order */
	/* Network byte order in the low 16 bits of a 4-byte load, on every
	 * kernel (5.18 made it a __be16 and kept 4-byte loads). */
	__u32 dst_port;
};

/* The registers a kprobe sees (bpf_tracing.h's PT_REGS_* read them); only
 * the UDP fallback (udp_kprobe.h) uses them. bpf2go builds one object per
 * architecture and defines __TARGET_ARCH_*. */
#define __VMLINUX_H__ /* kernel names for the registers (di, not rdi) */
#if defined(__TARGET_ARCH_x86)
struct pt_regs {
	unsigned long r15, r14, r13, r12, bp, bx, r11, r10, r9, r8;
	unsigned long ax, cx, dx, si, di, orig_ax, ip, cs, flags, sp, ss;
} __attribute__((preserve_access_index));
#elif defined(__TARGET_ARCH_arm64)
struct pt_regs;
struct user_pt_regs {
	__u64 regs[31];
	__u64 sp;
	__u64 pc;
	__u64 pstate;
};
#else
#error "conntrace builds for x86 and arm64 (bpf2go -target amd64,arm64)"
#endif
struct bpf_map;
struct seq_file;

/* UAPI context of skb programs (layout is ABI; fields after data_end are
 * left out: they are never read here). */
struct __sk_buff {
	__u32 len;
	__u32 pkt_type;
	__u32 mark;
	__u32 queue_mapping;
	__u32 protocol;
	__u32 vlan_present;
	__u32 vlan_tci;
	__u32 vlan_proto;
	__u32 priority;
	__u32 ingress_ifindex;
	__u32 ifindex;
	__u32 tc_index;
	__u32 cb[5];
	__u32 hash;
	__u32 tc_classid;
	__u32 data;
	__u32 data_end;
	__u32 napi_id;
	__u32 family;
	__u32 remote_ip4;
	__u32 local_ip4;
	__u32 remote_ip6[4];
	__u32 local_ip6[4];
	__u32 remote_port;
	__u32 local_port;
	__u32 data_meta;
	__bpf_md_ptr(void *, flow_keys);
	__u64 tstamp;
	__u32 wire_len;
	__u32 gso_segs;
	__bpf_md_ptr(struct bpf_sock *, sk);
};

/* UAPI context of cgroup sock_addr programs (layout is ABI). */
struct bpf_sock_addr {
	__u32 user_family;
	__u32 user_ip4;
	__u32 user_ip6[4];
	__u32 user_port;
	__u32 family;
	__u32 type;
	__u32 protocol;
	__u32 msg_src_ip4;
	__u32 msg_src_ip6[4];
	__bpf_md_ptr(struct bpf_sock *, sk);
};

/* UAPI context of sockops programs (layout is ABI). */
struct bpf_sock_ops {
	__u32 op;
	union {
		__u32 args[4];
		__u32 reply;
		__u32 replylong[4];
	};
	__u32 family;
	__u32 remote_ip4;
	__u32 local_ip4;
	__u32 remote_ip6[4];
	__u32 local_ip6[4];
	__u32 remote_port;
	__u32 local_port;
	__u32 is_fullsock;
	__u32 snd_cwnd;
	__u32 srtt_us;
	__u32 bpf_sock_ops_cb_flags;
	__u32 state;
	__u32 rtt_min;
	__u32 snd_ssthresh;
	__u32 rcv_nxt;
	__u32 snd_nxt;
	__u32 snd_una;
	__u32 mss_cache;
	__u32 ecn_flags;
	__u32 rate_delivered;
	__u32 rate_interval_us;
	__u32 packets_out;
	__u32 retrans_out;
	__u32 total_retrans;
	__u32 segs_in;
	__u32 data_segs_in;
	__u32 segs_out;
	__u32 data_segs_out;
	__u32 lost_out;
	__u32 sacked_out;
	__u32 sk_txhash;
	__u64 bytes_received;
	__u64 bytes_acked;
	__bpf_md_ptr(struct bpf_sock *, sk);
};

/* Kernel structs: only the fields used, relocated by CO-RE. */
struct in6_addr {
	union {
		__u8 u6_addr8[16];
		__be32 u6_addr32[4];
	} in6_u;
} __attribute__((preserve_access_index));

struct ns_common {
	unsigned int inum;
} __attribute__((preserve_access_index));

struct net {
	struct ns_common ns;
} __attribute__((preserve_access_index));

typedef struct {
	struct net *net;
} __attribute__((preserve_access_index)) possible_net_t;

typedef struct {
	__s64 counter;
} atomic64_t;

struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	volatile unsigned char skc_state;
	possible_net_t skc_net;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
	unsigned long skc_flags;
	atomic64_t skc_cookie;
} __attribute__((preserve_access_index));

/* cgroup v2 (bpf/cgroup.h). A cgroup's id is its kernfs node's (u64 since
 * Linux 5.5): the inode of its directory on the cgroup2 file system. */
struct kernfs_node {
	__u64 id;
} __attribute__((preserve_access_index));

/* The parent node: `parent` until Linux 6.14, `__parent` (RCU) since. */
struct kernfs_node___parent {
	struct kernfs_node *parent;
} __attribute__((preserve_access_index));

struct kernfs_node___rcu_parent {
	struct kernfs_node *__parent;
} __attribute__((preserve_access_index));

struct cgroup_root {
	int hierarchy_id; /* 0: the default (v2) hierarchy */
} __attribute__((preserve_access_index));

struct cgroup {
	struct kernfs_node *kn;
	struct cgroup_root *root;
} __attribute__((preserve_access_index));

/* The socket's cgroup, set when it is made (an accepted socket: the
 * listener's). Since Linux 5.15 a pointer of its own; before, a union
 * whose u64 `val` is the pointer unless its bit 0 (is_data) is set. */
struct sock_cgroup_data {
	struct cgroup *cgroup;
} __attribute__((preserve_access_index));

struct sock_cgroup_data___val {
	__u64 val;
} __attribute__((preserve_access_index));

struct sock___val {
	struct sock_cgroup_data___val sk_cgrp_data;
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
	__u16 sk_protocol;
	__u8 sk_userlocks;
	int sk_err;
	struct sock_cgroup_data sk_cgrp_data;
} __attribute__((preserve_access_index));

struct inet_sock {
	__be16 inet_sport;
} __attribute__((preserve_access_index));

struct inet_connection_sock {
	struct inet_sock icsk_inet;
} __attribute__((preserve_access_index));

struct tcp_sock {
	struct inet_connection_sock inet_conn;
	__u64 bytes_received;
	__u64 bytes_acked;
	__u32 snd_una;
	__u32 write_seq;
	__u32 srtt_us;
	__u32 mdev_us;
	__u32 total_retrans;
	__u32 data_segs_out;
	__u32 segs_out;
	__u64 bytes_retrans;
	__u32 dsack_dups;
	__u32 reord_seen;
	__u32 rcv_ooopack;
	__u32 delivered_ce;
	/* The peer's receive window, as it last advertised it (scaled). */
	__u32 snd_wnd;
	/* What limited sending (tcp_chrono_start/stop; TCP_INFO's
	 * tcpi_busy_time, tcpi_rwnd_limited, tcpi_sndbuf_limited): the time
	 * in each of enum tcp_chrono's states 1-3, in jiffies, and the one
	 * running since chrono_start. */
	__u32 chrono_start;
	__u32 chrono_stat[3];
	__u8 chrono_type:2;
} __attribute__((preserve_access_index));

/* What a reset without a connection is read from (Linux 6.10+ passes the
 * segment that found no socket): the TCP header the segment's data points
 * to, and the device it came in on (its network namespace). */
struct tcphdr {
	__be16 source;
	__be16 dest;
} __attribute__((preserve_access_index));

struct net_device {
	possible_net_t nd_net;
} __attribute__((preserve_access_index));

struct sk_buff {
	struct net_device *dev;
	unsigned char *data;
} __attribute__((preserve_access_index));

struct socket {
	struct sock *sk;
} __attribute__((preserve_access_index));

struct file;
struct request_sock;

struct task_struct {
	int pid;
	int tgid;
	char comm[16];
} __attribute__((preserve_access_index));

struct bpf_iter_meta {
	struct seq_file *seq;
	__u64 session_id;
	__u64 seq_num;
} __attribute__((preserve_access_index));

/* Iterator context (layout is what the kernel's BTF says: one pointer-sized
 * slot per argument). */
struct bpf_iter__task_file {
	__bpf_md_ptr(struct bpf_iter_meta *, meta);
	__bpf_md_ptr(struct task_struct *, task);
	__u32 fd;
	__bpf_md_ptr(struct file *, file);
};

struct bpf_iter__tcp {
	__bpf_md_ptr(struct bpf_iter_meta *, meta);
	__bpf_md_ptr(struct sock_common *, sk_common);
	__u32 uid __attribute__((aligned(8)));
};


#endif
