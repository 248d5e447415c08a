package tracer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
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

// cgroupNames configures the resolver (its Root aside): the defaults,
// smaller in tests.
var cgroupNames cgroup.Config

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
	t.cgroupRootDir = cgroupRoot(cgroupPath)
	cfg := cgroupNames
	cfg.Root = t.cgroupRootDir
	t.cgroups = cgroup.NewResolver(cfg)
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
		t.cgroupFilterIDs = map[uint64]uint8{}
		for _, p := range t.syncCgroupFilter() {
			level.Warn(t.logger).Log("msg", "a cgroup of the filter does not exist (yet): it applies once it is made", "cgroup", p)
		}
	}
	var err error
	if t.cgroupRd, err = ringbuf.NewReader(t.objs.CgroupEvents); err != nil {
		return fmt.Errorf("opening the cgroup event ring buffer: %w", err)
	}
	return nil
}

// catchUpCgroups walks the hierarchy again once every program is
// attached: a cgroup made or removed between the first walk and the
// attachment of the mkdir/rmdir tracepoints gave no event.
func (t *Tracer) catchUpCgroups() error {
	if t.cgroups == nil {
		return nil
	}
	if err := t.cgroups.Scan(); err != nil {
		return fmt.Errorf("naming cgroups: %w", err)
	}
	t.syncCgroupFilter()
	level.Info(t.logger).Log("msg", "naming cgroups", "root", t.cgroupRootDir, "cgroups", t.cgroups.Stats().Entries, "filter", !t.cfg.CgroupFilter.Empty())
	return nil
}

// syncCgroupFilter makes the kernel's filter table the ids of the filter's
// paths as they are now (after a walk: an id whose rmdir event was lost
// leaves it), and returns the paths that do not exist.
func (t *Tracer) syncCgroupFilter() (missing []string) {
	if t.cgroupPaths == nil {
		return nil
	}
	want := make(map[uint64]uint8, len(t.cgroupPaths))
	for p, v := range t.cgroupPaths {
		id, err := t.cgroups.ID(p)
		if err != nil {
			missing = append(missing, p)
			continue
		}
		want[id] = v
	}
	for id := range t.cgroupFilterIDs {
		if _, ok := want[id]; !ok {
			t.deleteCgroupFilter(id)
		}
	}
	for id, v := range want {
		t.putCgroupFilter(id, v)
	}
	slices.Sort(missing)
	return missing
}

// cgroupBatch bounds the events handed to the resolver at once.
const cgroupBatch = 4096

// drainCgroups reads the cgroup events into the resolver and the filter.
// The mkdir events of a drain go to the resolver together (each parent's
// directory is read once, however many cgroups came in it), before the
// rmdir events (ids are never reused: a cgroup made and removed within
// the drain is simply not found). Callers hold drainMu.
func (t *Tracer) drainCgroups() {
	if t.cgroupRd == nil {
		return
	}
	var lost uint64
	if t.objs.LostCgroupEvents.Get(&lost) == nil && lost != t.cgroupLost {
		// Events did not fit. The filter's cgroups made or removed
		// meanwhile are found at once, on the file system (its paths
		// alone); the names by a walk, in the background (250 ms at
		// 16,000 cgroups: scrapes wait for the drain), at most every
		// MinRescan.
		if lost != t.cgroupFilterLost {
			t.syncCgroupFilter()
			t.cgroupFilterLost = lost
		}
		if t.cgroups.RescanDue() && t.cgroupWalking.CompareAndSwap(false, true) {
			go func() {
				defer t.cgroupWalking.Store(false)
				walked, err := t.cgroups.ScanIfDue()
				if err != nil {
					level.Warn(t.logger).Log("msg", "naming cgroups after lost events", "err", err)
				} else if walked {
					t.cgroupWalkedFor.Store(lost)
				}
			}()
		}
	}
	if walkedFor := t.cgroupWalkedFor.Swap(0); walkedFor != 0 {
		t.cgroupLost = walkedFor // the names caught up with these losses
	}
	t.cgroupRd.SetDeadline(time.Unix(1, 0))
	made, removed := t.cgroupMade[:0], t.cgroupRemoved[:0]
	defer func() { t.cgroupMade, t.cgroupRemoved = made[:0], removed[:0] }()
	for len(made)+len(removed) < cgroupBatch {
		if err := t.cgroupRd.ReadInto(&t.drainRec); err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				level.Warn(t.logger).Log("msg", "reading the cgroup event ring buffer", "err", err)
			}
			break
		}
		var ev bpf.ConntraceCgroupEvent
		if len(t.drainRec.RawSample) < int(unsafe.Sizeof(ev)) {
			t.decode.Add(1)
			continue
		}
		ev = *(*bpf.ConntraceCgroupEvent)(unsafe.Pointer(&t.drainRec.RawSample[0]))
		if ev.Removed != 0 {
			removed = append(removed, ev.Id)
		} else {
			made = append(made, cgroup.CreatedEvent{ID: ev.Id, Parent: ev.Parent})
		}
	}
	if len(made) > 0 {
		t.cgroups.CreatedAll(made)
	}
	unnamed := false
	for _, ev := range made {
		if t.cgroupPaths == nil {
			break
		}
		info, ok := t.cgroups.Peek(ev.ID)
		if !ok {
			unnamed = true
			continue
		}
		if v, listed := t.cgroupPaths[info.Path]; listed {
			t.putCgroupFilter(ev.ID, v)
		}
	}
	if unnamed {
		// A new cgroup the names do not hold (full, or its parent not
		// known yet) may be one of the filter's: look its paths up on
		// the file system, so that the filter never depends on the
		// names' bounds (at most 1,024 lstats a drain).
		t.syncCgroupFilter()
	}
	for _, id := range removed {
		t.cgroups.Removed(id)
		if _, listed := t.cgroupFilterIDs[id]; listed {
			t.deleteCgroupFilter(id) // its id never comes back: keep the table small
		}
	}
}

func (t *Tracer) putCgroupFilter(id uint64, v uint8) {
	if err := t.objs.CgroupFilter.Put(id, v); err != nil {
		level.Warn(t.logger).Log("msg", "adding a cgroup to the filter", "id", id, "err", err)
		return
	}
	t.cgroupFilterIDs[id] = v
}

func (t *Tracer) deleteCgroupFilter(id uint64) {
	if err := t.objs.CgroupFilter.Delete(id); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		level.Warn(t.logger).Log("msg", "removing a cgroup from the filter", "id", id, "err", err)
	}
	delete(t.cgroupFilterIDs, id)
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
