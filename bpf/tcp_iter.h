/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * TCP through iter/tcp, for kernels whose verifier refuses socket storage
 * on the socket a task_file iterator reads from a file (the pointer read
 * from struct socket is untrusted there, e.g. 6.18.44-fc-v1045). The loader
 * picks these or the task_file programs (tracer/hooks.go), never both.
 *
 *   iter/task_file seed_owners   once, at start-up: remembers listeners
 *                                (as seed_listeners) and, for every socket,
 *                                the process holding it, by the socket's
 *                                address (a number read with
 *                                bpf_probe_read_kernel, not a pointer the
 *                                verifier would refuse)
 *   iter/tcp seed_conns_tcp      once, at start-up: the connections that
 *                                existed before, as seed_conns
 *   iter/tcp dump_conns_tcp      each scrape: the live counters, as
 *                                dump_conns
 *
 * iter/tcp hands the socket itself, which the verifier accepts, but shows
 * only the sockets of the network namespace it was opened in: user space
 * opens one per namespace. It also visits sockets no process holds.
 * Included from conntrace.c.
 */

SEC("iter/task_file")
int seed_owners(struct bpf_iter__task_file *ctx)
{
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;
	struct owner o = {};
	struct socket *sock;
	struct sock *sk;
	__u64 addr = 0;
	__u16 proto;

	if (!file || !task)
		return 0;
	sock = bpf_sock_from_file(file);
	if (!sock)
		return 0;
	if (bpf_probe_read_kernel(&addr, sizeof(addr), &sock->sk) || !addr)
		return 0;
	o.tgid = task->tgid;
	__builtin_memcpy(o.comm, task->comm, COMM_LEN);
	bpf_map_update_elem(&owners, &addr, &o, BPF_NOEXIST); /* the first holder, as the task_file pass */
	/* An untrusted pointer can be read, not handed to a helper:
	 * remember_listener only reads it. An MPTCP listener holds the TCP
	 * one inside, with the same port and netns (see seed_listeners). */
	sk = sock->sk;
	if (!sk)
		return 0;
	proto = sk->sk_protocol;
	if ((proto == IPPROTO_TCP || proto == IPPROTO_MPTCP) && sk->__sk_common.skc_state == TCP_LISTEN)
		remember_listener(sk, task->tgid, task->comm, false);
	return 0;
}

/* iter_tcp_sock returns the iterator's socket if it is a full TCP socket
 * (not a request or time-wait one), with the process holding it in who
 * (zero when none was recorded). */
static __always_inline struct sock *iter_tcp_sock(struct bpf_iter__tcp *ctx, struct owner *who)
{
	struct sock_common *skc = ctx->sk_common;
	struct tcp_sock *tp;
	struct owner *o;
	__u64 addr;

	__builtin_memset(who, 0, sizeof(*who));
	if (!skc)
		return NULL;
	tp = bpf_skc_to_tcp_sock(skc);
	if (!tp)
		return NULL;
	addr = (__u64)tp;
	o = bpf_map_lookup_elem(&owners, &addr);
	if (o)
		*who = *o;
	return (struct sock *)tp;
}

SEC("iter/tcp")
int seed_conns_tcp(struct bpf_iter__tcp *ctx)
{
	struct owner who;
	struct sock *sk = iter_tcp_sock(ctx, &who);

	if (!sk)
		return 0;
	return seed_conn(sk, who.tgid, who.comm);
}

SEC("iter/tcp")
int dump_conns_tcp(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct tcp_sock *tp;

	if (!skc)
		return 0;
	tp = bpf_skc_to_tcp_sock(skc);
	if (!tp)
		return 0;
	return dump_conn((struct sock *)tp, ctx->meta, 0, NULL); /* its owner only if it has none */
}
