package tracer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/go-kit/log/level"

	"github.com/conntrace/conntrace_exporter/bpf"
	"github.com/conntrace/conntrace_exporter/cgroup"
)

// Workloads: the kernel gives each connection its socket's cgroup id
// (bpf/cgroup.h); the resolver names it (package cgroup), kept current by
// the cgroup_mkdir and cgroup_rmdir events the kernel puts in their ring
// buffer, drained before the closed connections (drainClosed), so that a
// connection of a new cgroup finds it named. The cgroup filter of the
// config file is a kernel table of cgroup ids, from its paths: a filtered
// cgroup made later (a service restarted) is added from its mkdir event.

// The kernel filter table's values (bpf/cgroup.h).
const (
	cgroupInclude uint8 = 1
	cgroupExclude uint8 = 2
)

// cgroupsWanted says whether the cgroups of connections are named or
// filtered: the resolver and the mkdir/rmdir programs are then wanted.
func (t *Tracer) cgroupsWanted() bool { return t.cfg.Cgroups || !t.cfg.CgroupFilter.Empty() }

// cgroupRoot is the root of the cgroup2 file system that holds path, as
// mounted here: the topmost directory above it still on cgroup2 (a hybrid
// host's /sys/fs/cgroup/unified, the DaemonSet's /host/sys/fs/cgroup).
func cgroupRoot(path string) string {
	p := filepath.Clean(path)
	for {
		up := filepath.Dir(p)
		if up == p || checkCgroup2(up) != nil {
			return p
		}
		p = up
	}
}

// cgroupSpec sets the filter's switches in the spec before loading, and
// shrinks the tables nothing uses.
func (t *Tracer) cgroupSpec(spec *ebpf.CollectionSpec) error {
	if !t.cgroupsWanted() {
		spec.Maps["cgroup_events"].MaxEntries = uint32(os.Getpagesize())
	}
	f := t.cfg.CgroupFilter
	if f.Empty() {
		spec.Maps["cgroup_filter"].MaxEntries = 1
		return nil
	}
	if err := spec.Variables["cgroup_filter_on"].Set(uint8(1)); err != nil {
		return fmt.Errorf("setting cgroup_filter_on: %w", err)
	}
	if len(f.Include) > 0 {
		if err := spec.Variables["cgroup_includes_on"].Set(uint8(1)); err != nil {
			return fmt.Errorf("setting cgroup_includes_on: %w", err)
		}
	}
	return nil
}

// startCgroups makes the resolver (with its first walk of the hierarchy)
// and fills the filter table, before any program attaches: the first
// connections find both ready. cgroupPath is where the programs attach.
func (t *Tracer) startCgroups(cgroupPath string) error {
	if !t.cgroupsWanted() {
		return nil
	}
	root := cgroupRoot(cgroupPath)
	t.cgroups = cgroup.NewResolver(cgroup.Config{Root: root})
	if err := t.cgroups.Scan(); err != nil {
		return fmt.Errorf("naming cgroups: %w", err)
	}
	if f := t.cfg.CgroupFilter; !f.Empty() {
		t.cgroupPaths = make(map[string]uint8, len(f.Include)+len(f.Exclude))
		for _, p := range f.Include {
			t.cgroupPaths[p] = cgroupInclude
		}
		for _, p := range f.Exclude {
			t.cgroupPaths[p] = cgroupExclude
		}
		for p, v := range t.cgroupPaths {
			id, err := t.cgroups.ID(p)
			if err != nil {
				level.Warn(t.logger).Log("msg", "a cgroup of the filter does not exist (yet): it applies once it is made", "cgroup", p, "err", err)
				continue
			}
			if err := t.objs.CgroupFilter.Put(id, v); err != nil {
				return fmt.Errorf("loading the cgroup filter %s: %w", p, err)
			}
		}
	}
	level.Info(t.logger).Log("msg", "naming cgroups", "root", root, "cgroups", t.cgroups.Stats().Entries, "filter", !t.cfg.CgroupFilter.Empty())
	var err error
	if t.cgroupRd, err = ringbuf.NewReader(t.objs.CgroupEvents); err != nil {
		return fmt.Errorf("opening the cgroup event ring buffer: %w", err)
	}
	return nil
}

// drainCgroups reads the cgroup events into the resolver and the filter.
// Callers hold drainMu.
func (t *Tracer) drainCgroups() {
	if t.cgroupRd == nil {
		return
	}
	var lost uint64
	if t.objs.LostCgroupEvents.Get(&lost) == nil && lost != t.cgroupLost {
		// Events did not fit: walk again, and find the filtered cgroups
		// made meanwhile.
		t.cgroupLost = lost
		if err := t.cgroups.Scan(); err != nil {
			level.Warn(t.logger).Log("msg", "naming cgroups after lost events", "err", err)
		}
		for p, v := range t.cgroupPaths {
			if id, err := t.cgroups.ID(p); err == nil {
				t.putCgroupFilter(p, id, v)
			}
		}
	}
	t.cgroupRd.SetDeadline(time.Unix(1, 0))
	for {
		if err := t.cgroupRd.ReadInto(&t.drainRec); err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				level.Warn(t.logger).Log("msg", "reading the cgroup event ring buffer", "err", err)
			}
			return
		}
		var ev bpf.ConntraceCgroupEvent
		if len(t.drainRec.RawSample) < int(unsafe.Sizeof(ev)) {
			t.decode.Add(1)
			continue
		}
		ev = *(*bpf.ConntraceCgroupEvent)(unsafe.Pointer(&t.drainRec.RawSample[0]))
		if ev.Removed != 0 {
			t.cgroups.Removed(ev.Id)
			if t.cgroupPaths != nil {
				// Its id will not come back: keep the table small.
				if err := t.objs.CgroupFilter.Delete(ev.Id); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
					level.Warn(t.logger).Log("msg", "removing a cgroup from the filter", "id", ev.Id, "err", err)
				}
			}
			continue
		}
		t.cgroups.Created(ev.Id, ev.Parent)
		if t.cgroupPaths != nil {
			if info, ok := t.cgroups.Lookup(ev.Id); ok {
				if v, listed := t.cgroupPaths[info.Path]; listed {
					t.putCgroupFilter(info.Path, ev.Id, v)
				}
			}
		}
	}
}

func (t *Tracer) putCgroupFilter(path string, id uint64, v uint8) {
	if err := t.objs.CgroupFilter.Put(id, v); err != nil {
		level.Warn(t.logger).Log("msg", "adding a cgroup to the filter", "cgroup", path, "err", err)
	}
}

// Cgroup names a cgroup id of ConnectionStats.Cgroup; false when it is not
// known (counted in CgroupStats.Misses) or cgroups are not named.
func (t *Tracer) Cgroup(id uint64) (cgroup.Info, bool) {
	if t.cgroups == nil {
		return cgroup.Info{}, false
	}
	return t.cgroups.Lookup(id)
}

// CgroupStats are the resolver's counts; ok false when cgroups are not
// named.
func (t *Tracer) CgroupStats() (s cgroup.Stats, ok bool) {
	if t.cgroups == nil {
		return s, false
	}
	return t.cgroups.Stats(), true
}
