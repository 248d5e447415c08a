// Package cgroup names cgroup v2 ids. The tracer reports, for each socket,
// the id of its cgroup (the id of the cgroup's kernfs node: on 64-bit
// kernels the inode number of its directory on the cgroup2 file system;
// the root cgroup's is 1). A Resolver turns such ids into the cgroup's path
// below the cgroup2 mount, with a bounded cache kept current from the
// kernel's mkdir and rmdir events, and Describe derives labels from a path:
// the systemd unit, the container id and the Kubernetes pod uid.
//
// Cgroup names are not trusted: with delegation an unprivileged user
// creates cgroups and names them as they like. So Describe accepts any
// string without panicking and only reports values of the exact shapes
// documented there, and the Resolver holds at most Config.MaxEntries
// entries and Config.MaxBytes bytes of paths and walks at most 64 levels
// below the root, however large the tree, counting what it leaves out
// (Stats.Dropped).
//
// Nor may a name forge another workload's labels: on a systemd host every
// user may make cgroups below their own user@UID.service (systemd makes it
// and hands it to the user), and name one "docker-<id>.scope" or
// "kubepods-pod<uid>.slice". So the Resolver derives the labels only from
// the part of a path whose directories are all owned by root (uid 0): the
// root cgroup is trusted, and a cgroup is when its parent is and its own
// directory is owned by root; Info.Path is still the whole path. Only root
// can make a directory root's, and a user's cgroups are made by the user
// (the kernel gives a new cgroup its maker's uid). In
// "/user.slice/user-1000.slice/user@1000.service/app.slice/docker-<id>.scope",
// with user@1000.service owned by uid 1000, the unit is "user-1000.slice"
// and there is no container id. Describe itself reads the whole path:
// DescribeTrusted reads its first components only.
package cgroup
