/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Workloads: the cgroup (v2) of each connection, and the cgroup filter.
 *
 *   sk_cgroup_id     the socket's cgroup id, read where a connection or a
 *                    UDP flow starts: the cgroup of the process that made
 *                    the socket (an accepted one: the listener's), which
 *                    the kernel keeps with the socket for its whole life
 *   cgroup_traced    the filter (--config.file `cgroups`): the deepest
 *                    cgroup of the socket's ancestry that the table names
 *                    decides; none: traced unless there are includes
 *   tp_btf/cgroup_mkdir, tp_btf/cgroup_rmdir
 *                    cgroups made and removed on the v2 hierarchy, told to
 *                    user space, which names them (paths are not read
 *                    here: lockdown refuses reading kernel strings)
 *
 * A cgroup id is the inode of the cgroup's directory on the cgroup2 file
 * system, as bpf_get_current_cgroup_id() gives it; 0: unknown. Included
 * from conntrace.c.
 */

/* Levels of a socket's cgroup the filter looks at, as user space walks
 * (cgroup.Resolver): deeper ancestors are not seen. */
#define CGROUP_MAX_DEPTH 64

enum { CGROUP_INCLUDE = 1, CGROUP_EXCLUDE = 2 };

/* Set by the loader: the filter table is filled; it holds includes. */
volatile const __u8 cgroup_filter_on = 0;
volatile const __u8 cgroup_includes_on = 0;

/* cgroup id -> CGROUP_INCLUDE or CGROUP_EXCLUDE. Kept by user space: a
 * filtered cgroup made again later (a service restarted) gets its new id
 * from the mkdir event. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, __u8);
} cgroup_filter SEC(".maps");

struct cgroup_event {
	__u64 id;
	__u64 parent; /* 0 for the root */
	__u32 removed;
	__u32 _pad;
};
const struct cgroup_event *unused_cgroup_event __attribute__((unused)); /* for bpf2go */

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 16);
} cgroup_events SEC(".maps");

/* Events that did not fit: user space walks the hierarchy again. */
__u64 lost_cgroup_events;

/* Filter checks of a socket deeper than CGROUP_MAX_DEPTH levels: traced,
 * whatever the filter says of its ancestors further up. */
__u64 cgroup_filter_too_deep;

/* The root cgroup's id: its kernfs node is the hierarchy's first. */
#define CGROUP_ROOT_ID 1

/* sk_cgroup: the socket's cgroup; NULL for the root. Before Linux 5.15
 * the field is a u64 that only a probe-read can follow (those kernels have
 * no lockdown in the matrix; a refused read gives 0): as the kernel's
 * sock_cgroup_ptr, bits 0-1 set (is_data, no_refcnt: net_prio or net_cls
 * took the field) or 0 mean the root. */
static __always_inline struct cgroup *sk_cgroup(struct sock *sk, bool probed, bool *scalar)
{
	if (bpf_core_field_exists(sk->sk_cgrp_data.cgroup)) {
		*scalar = probed;
		return probed ? BPF_CORE_READ(sk, sk_cgrp_data.cgroup) : sk->sk_cgrp_data.cgroup;
	}
	struct sock___val *old = (void *)sk;
	__u64 val = BPF_CORE_READ(old, sk_cgrp_data.val);

	*scalar = true;
	if (val & 3)
		return NULL;
	return (struct cgroup *)val;
}

/* kn_parent: a kernfs node's parent (NULL for the root). */
static __always_inline struct kernfs_node *kn_parent(struct kernfs_node *kn, bool scalar)
{
	if (bpf_core_field_exists(struct kernfs_node___rcu_parent, __parent)) {
		struct kernfs_node___rcu_parent *n = (void *)kn;
		return scalar ? BPF_CORE_READ(n, __parent) : n->__parent;
	}
	struct kernfs_node___parent *n = (void *)kn;
	return scalar ? BPF_CORE_READ(n, parent) : n->parent;
}

static __always_inline __u64 kn_id(struct kernfs_node *kn, bool scalar)
{
	return scalar ? BPF_CORE_READ(kn, id) : kn->id;
}

static __always_inline struct kernfs_node *cgroup_kn(struct cgroup *cg, bool scalar)
{
	return scalar ? BPF_CORE_READ(cg, kn) : cg->kn;
}

/* root_traced: the filter's decision for a socket of the root cgroup. */
static __always_inline bool root_traced(void)
{
	__u64 k = CGROUP_ROOT_ID;
	__u8 *v;

	if (!cgroup_filter_on)
		return true;
	v = bpf_map_lookup_elem(&cgroup_filter, &k);
	return v ? *v == CGROUP_INCLUDE : !cgroup_includes_on;
}

/* sk_cgroup_id returns the socket's cgroup id (0: unknown) and says
 * whether the filter traces the socket: the deepest of its cgroup and
 * their ancestors the table names decides; none: traced unless there are
 * includes; deeper than the filter looks: traced, and counted. */
static __always_inline bool sk_cgroup_id(struct sock *sk, bool probed, __u64 *id)
{
	struct kernfs_node *kn;
	struct cgroup *cg;
	bool scalar;
	__u8 *v;

	*id = CGROUP_ROOT_ID;
	cg = sk_cgroup(sk, probed, &scalar);
	if (!cg)
		return root_traced();
	kn = cgroup_kn(cg, scalar);
	if (!kn) {
		*id = 0; /* not readable */
		return !cgroup_filter_on || !cgroup_includes_on;
	}
	*id = kn_id(kn, scalar);
	if (!cgroup_filter_on)
		return true;
	for (int i = 0; i < CGROUP_MAX_DEPTH; i++) {
		__u64 k = kn_id(kn, scalar);

		v = bpf_map_lookup_elem(&cgroup_filter, &k);
		if (v)
			return *v == CGROUP_INCLUDE;
		kn = kn_parent(kn, scalar);
		if (!kn)
			return !cgroup_includes_on; /* the root passed: none listed */
	}
	/* The root not reached: a socket nested this deep (a user's delegated
	 * subtree may be) is traced rather than hidden from an include. */
	__sync_fetch_and_add(&cgroup_filter_too_deep, 1);
	return true;
}

static __always_inline void cgroup_event(struct cgroup *cg, __u32 removed)
{
	struct cgroup_event *ev;
	struct kernfs_node *kn, *parent;

	if (!cg || cg->root->hierarchy_id != 0)
		return; /* a cgroup v1 hierarchy */
	kn = cg->kn;
	if (!kn)
		return;
	ev = bpf_ringbuf_reserve(&cgroup_events, sizeof(*ev), 0);
	if (!ev) {
		__sync_fetch_and_add(&lost_cgroup_events, 1);
		return;
	}
	ev->id = kn->id;
	parent = kn_parent(kn, false);
	ev->parent = parent ? parent->id : 0;
	ev->removed = removed;
	ev->_pad = 0;
	bpf_ringbuf_submit(ev, 0);
}

SEC("tp_btf/cgroup_mkdir")
int BPF_PROG(handle_cgroup_mkdir, struct cgroup *cg, const char *path)
{
	cgroup_event(cg, 0);
	return 0;
}

SEC("tp_btf/cgroup_rmdir")
int BPF_PROG(handle_cgroup_rmdir, struct cgroup *cg, const char *path)
{
	cgroup_event(cg, 1);
	return 0;
}
