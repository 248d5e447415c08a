// Package cgroup names cgroup v2 ids. The tracer reports, for each socket,
// the id of its cgroup (bpf_get_current_cgroup_id: on 64-bit kernels the
// inode number of the cgroup's directory on the cgroup2 file system; the
// root cgroup's is 1). A Resolver turns such ids into the cgroup's path
// below the cgroup2 mount, with a bounded cache kept current from the
// kernel's mkdir and rmdir events, and Describe derives labels from a path:
// the systemd unit, the container id and the Kubernetes pod uid.
//
// Cgroup names are not trusted: with delegation an unprivileged user
// creates cgroups and names them as they like. So Describe accepts any
// string without panicking and only reports values of the exact shapes
// documented there, and the Resolver holds at most Config.MaxEntries
// entries and walks at most 64 levels below the root, however large the
// tree, counting what it leaves out (Stats.Dropped).
package cgroup
