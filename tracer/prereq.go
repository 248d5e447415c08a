package tracer

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// vmlinuxBTF is where the kernel publishes its BTF; CO-RE needs it. A
// variable for tests.
var vmlinuxBTF = "/sys/kernel/btf/vmlinux"

// capability numbers from linux/capability.h.
const (
	capNetAdmin  = 12
	capSysPtrace = 19
	capSysAdmin  = 21
	capPerfmon   = 38
	capBPF       = 39
)

// checkPrerequisites says, before anything is loaded, what is missing:
// privileges, kernel BTF, a cgroup v2 mount. It returns the cgroup path.
func checkPrerequisites(cfg *Config) (string, error) {
	if err := checkCapabilities(); err != nil {
		return "", err
	}
	if _, err := os.Stat(vmlinuxBTF); err != nil {
		return "", fmt.Errorf("kernel BTF not found at %s (%v): the kernel must be built with CONFIG_DEBUG_INFO_BTF=y", vmlinuxBTF, err)
	}
	if cfg.CgroupPath != "" {
		if err := checkCgroup2(cfg.CgroupPath); err != nil {
			return "", &FieldError{Field: "CgroupPath", Value: cfg.CgroupPath, Err: err}
		}
		return cfg.CgroupPath, nil
	}
	mountinfo := filepath.Join(cfg.ProcRoot, "self", "mountinfo")
	path, err := findCgroup2Mount(mountinfo)
	if err != nil {
		return "", err
	}
	return path, nil
}

// effectiveCapabilities returns a test of the process's effective
// capabilities.
func effectiveCapabilities() (func(c uint) bool, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return nil, fmt.Errorf("reading the process capabilities: %w", err)
	}
	return func(c uint) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }, nil
}

// optionalCapabilities lists the capabilities the tracer runs without, and
// what each costs; said at start-up.
func optionalCapabilities() []string {
	has, err := effectiveCapabilities()
	if err != nil {
		return nil
	}
	var out []string
	if !has(capSysAdmin) {
		out = append(out, "CAP_SYS_ADMIN: NAT (conntrack) and listening ports are not read in other network namespaces (entering one needs it), nor TCP connections there through iter/tcp (--tracer.tcp-iterator=tcp, or a kernel that refuses task_file), and --tracer.bpf-stats cannot be used")
	}
	if !has(capSysPtrace) {
		out = append(out, "CAP_SYS_PTRACE: the network namespaces of other users' processes (containers) cannot be opened, so their NAT is not read")
	}
	return out
}

func checkCapabilities() error {
	has, err := effectiveCapabilities()
	if err != nil {
		return err
	}
	var missing []string
	if !has(capSysAdmin) {
		if !has(capBPF) {
			missing = append(missing, "CAP_BPF")
		}
		if !has(capPerfmon) {
			missing = append(missing, "CAP_PERFMON")
		}
	}
	if !has(capNetAdmin) {
		missing = append(missing, "CAP_NET_ADMIN")
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing capabilities %s (running as uid %d): run as root, or grant them, e.g. setcap cap_bpf,cap_perfmon,cap_net_admin+ep conntrace_exporter",
			strings.Join(missing, ", "), os.Geteuid())
	}
	return nil
}

func checkCgroup2(path string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return err
	}
	if st.Type != unix.CGROUP2_SUPER_MAGIC {
		return errors.New("not a cgroup v2 file system")
	}
	return nil
}

// FindCgroup2Mount returns the first cgroup2 mount point in mountinfo
// (/sys/fs/cgroup, or /sys/fs/cgroup/unified on a hybrid layout), the
// default of Config.CgroupPath; the error says how to mount one.
func FindCgroup2Mount(mountinfo string) (string, error) { return findCgroup2Mount(mountinfo) }

// findCgroup2Mount returns the first cgroup2 mount point in mountinfo.
func findCgroup2Mount(mountinfo string) (string, error) {
	f, err := os.Open(mountinfo)
	if err != nil {
		return "", fmt.Errorf("looking for a cgroup v2 mount: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source superoptions
		fields := strings.Fields(sc.Text())
		for i, fld := range fields {
			if fld == "-" && i+1 < len(fields) && i >= 4 {
				if fields[i+1] == "cgroup2" {
					return fields[4], nil
				}
				break
			}
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("reading %s: %w", mountinfo, err)
	}
	return "", fmt.Errorf("no cgroup v2 mount found in %s: the sockops program attaches to a cgroup v2 root; mount one with `mkdir -p /sys/fs/cgroup/unified && mount -t cgroup2 none /sys/fs/cgroup/unified`, or pass --tracer.cgroup-path", mountinfo)
}
