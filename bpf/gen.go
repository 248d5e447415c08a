// Package bpf holds the eBPF programs of conntrace_exporter (conntrace.c) and
// the Go bindings bpf2go generates for them. The generated files are
// committed, one object per architecture (amd64, arm64: the kprobe fallback
// reads registers); `make generate` rebuilds them and CI fails if they differ.
package bpf

//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -mcpu=v3" -target amd64,arm64 -type conn_record -type conn_state -type udp_key -type udp_flow -type filter_key -type filter_ports -type dns_event -type cgroup_event Conntrace conntrace.c
