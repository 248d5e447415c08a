// Package tracer traces every TCP connection and UDP flow of the host with
// eBPF: it chooses how this kernel is traced (choose.go), loads the
// programs of its catalogue (catalogue.go, loader.go) and attaches them
// (attach.go), reads the live connections at each scrape (Snapshot) and
// hands those that leave (closed, expired) to a Sink as the ring buffers
// drain (drain.go). Each connection's counters are one value type,
// Counters, kept monotonic across reads (known.go).
//
// It holds no per-client state: that is package netstate's. Filters are
// package filter's, DNS parsing and the name cache package dns's.
package tracer
