// Package filter parses and matches the connection filters and reads the
// --config.file (filters and address groups). It is a leaf: it knows
// nothing of BPF or of the tracer, and matches its own connection model,
// Conn. The tracer turns a ConnectionFilters into kernel tables
// (KernelTables) and loads them into its maps itself.
//
// Connection filters: the seed's excluded_source_connections and
// excluded_destination_connections (datadog.md §2), plus an include form.
//
// Format: a map from an address spec to a list of port specs.
//
//   - Address spec: "*" (any address, IPv4 and IPv6), an IP address (a host:
//     /32 or /128), or a CIDR (host bits are dropped, as the seed's
//     net.ParseCIDR did: "10.0.0.3/24" is 10.0.0.0/24).
//   - Port spec: an optional protocol prefix "tcp" or "udp" (any case; none
//     means both), then "*" (every port), a port "80" or an inclusive range
//     "53361-53500". Ports are 1-65535.
//
// A filter matches one side of a connection: a source filter the local side
// (Conn.Local: the tracer's ConnectionStats.Source, SPort), a destination
// filter the remote side (Conn.Remote: Dest, DPort). It matches when its
// address spec contains the address and one of its port specs matches the
// port and the protocol. Several specs of one address OR together ("udp *"
// and "tcp 11211").
//
// Deliberate differences from the seed, each pinned by a test in
// filter_test.go:
//
//  1. A bad entry is an error, not an entry skipped with a log line: the
//     error names the list (when known), the address key and the offending
//     port spec. Every bad entry is reported at once (errors.Join), in a
//     deterministic order (keys sorted, then the port specs in list order).
//  2. An IPv6 address without a prefix length is a /128 host, like an IPv4
//     address is a /32 (the seed appended /64, so "2001:db8::1" excluded a
//     whole /64). A fully expanded IPv6 address ("2001:db8:0:0:0:0:0:1"),
//     which the seed rejected for lacking "::", is accepted.
//  3. IPv4-mapped IPv6 addresses and prefixes ("::ffff:10.0.0.1",
//     "::ffff:10.0.0.0/104") are unmapped to IPv4 (10.0.0.1/32, 10.0.0.0/8),
//     as the tracer reports connections of IPv4-mapped sockets as IPv4 (and
//     connection addresses are unmapped before matching too). The seed saw
//     the '.' in "::ffff:10.0.0.1" and appended "/32": the IPv6 prefix ::/32,
//     which never matched the IPv4 connection and did match ::1. An IPv6
//     prefix shorter than /96 stays IPv6 and so never matches an IPv4
//     connection (as in the seed); use "*" or an IPv4 CIDR for those.
//  4. The wildcard address is "*" alone. The seed took any key containing a
//     '*' ("10.0.*") as the wildcard, which silently matched every address.
//  5. Two keys of one list that normalise to the same prefix ("10.0.0.1" and
//     "10.0.0.1/32", or "10.0.0.0/24" and "10.0.0.3/24") are an error: the
//     seed kept both, and which ports applied depended on map order.
//  6. Source and destination filters are both checked. The seed's
//     IsBlacklistedConnection checked the destination filters only when
//     there were no source filters (an "else if"), contradicting its own
//     documentation; either side matching now excludes the connection.
//  7. Keys and port specs are trimmed of surrounding white space, and a
//     protocol written after the port ("3333 udp") gets an error saying so.
//  8. Port ranges are kept as ranges (ConnectionFilter.Ranges, sorted and
//     disjoint) instead of being expanded into a map of every port:
//     "1-65535" was 65535 map entries. Ports (the seed's map) is left nil by
//     the parser, and still honoured when set by hand.
//  9. Bounded: at most 10000 port specs (maxFilterEntries) in all, so a
//     huge file fails with a clear error instead of exhausting memory.
//
// Kept from the seed: "*" with "*" (every port of both protocols) is an error
// for an exclusion, since it would exclude every connection. For the include
// form it is allowed and includes every connection (so it makes the include
// filters a no-op; it can still be written to say so explicitly).
package filter
