package tracer

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netns"

	"github.com/conntrace/conntrace_exporter/internal/nsexec"
)

// With iter/tcp (TCPIteratorTCP) an iterator shows the sockets of the network
// namespace it was opened in, so it is opened once in each: each namespace a
// process is in, found in /proc, the exporter's own first and without
// entering it.

// netnsPaths returns one path per network namespace other than the
// exporter's own: /proc/PID/ns/net of a process in it, or /run/netns/NAME
// for a named one no process is in. A process that exits meanwhile is
// skipped.
func netnsPaths(procRoot string) ([]string, error) {
	self, ok := nsInode(filepath.Join(procRoot, "self", "ns", "net"))
	if !ok {
		return nil, fmt.Errorf("the exporter's own network namespace: %s/self/ns/net is not readable", procRoot)
	}
	entries, err := os.ReadDir(procRoot)
	if err != nil {
		return nil, err
	}
	seen := map[uint32]bool{self: true}
	var out []string
	add := func(path string) {
		if ino, ok := nsInode(path); ok && !seen[ino] {
			seen[ino] = true
			out = append(out, path)
		}
	}
	for _, e := range entries {
		if _, err := strconv.ParseUint(e.Name(), 10, 32); err == nil {
			add(filepath.Join(procRoot, e.Name(), "ns", "net"))
		}
	}
	named, _ := filepath.Glob("/run/netns/*")
	for _, path := range named {
		add(path)
	}
	return out, nil
}

// readIterInEachNetns writes to w what it shows in the exporter's network
// namespace and in every other one of procRoot's processes. It returns how
// many namespaces could not be entered (setns needs CAP_SYS_ADMIN) with the
// first such error; a namespace that vanished meanwhile is not an error.
func readIterInEachNetns(it *link.Iter, procRoot string, w io.Writer) (refused int, firstErr error, err error) {
	if err := readIter(it, w); err != nil {
		return 0, nil, err
	}
	paths, err := netnsPaths(procRoot)
	if err != nil {
		return 0, nil, err
	}
	for _, path := range paths {
		ns, err := netns.GetFromPath(path)
		if err != nil {
			continue // the process exited
		}
		err = nsexec.Do(ns, func() error { return readIter(it, w) })
		ns.Close()
		if err != nil {
			if errors.Is(err, os.ErrPermission) {
				refused++
				if firstErr == nil {
					firstErr = fmt.Errorf("%s: %w", path, err)
				}
				continue
			}
			return refused, firstErr, fmt.Errorf("reading the iterator in the network namespace of %s: %w", path, err)
		}
	}
	return refused, firstErr, nil
}

// readIter opens it in the calling thread's network namespace and writes
// all it shows to w.
//
// A read() that visits a million objects without writing anything stops
// with EAGAIN (the kernel's MAX_ITER_OBJECTS, to give the CPU back), and
// the next read() goes on from there: a task_file iterator on a host with
// a million open files meets it (start-up failed there). It is read again,
// up to maxIterRetries times in a row.
func readIter(it *link.Iter, w io.Writer) error {
	rd, err := it.Open()
	if err != nil {
		return err
	}
	defer rd.Close()
	buf := make([]byte, 64<<10) // the kernel's seq_file buffer is 32 KiB
	for again := 0; ; {
		n, err := rd.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		switch {
		case err == io.EOF:
			return nil
		case errors.Is(err, syscall.EAGAIN):
			if again++; again > maxIterRetries {
				return fmt.Errorf("the iterator visited %d million objects without an end: %w", maxIterRetries, err)
			}
		case err != nil:
			return err
		default:
			again = 0
		}
	}
}

// maxIterRetries bounds the EAGAINs in a row of one iterator read: a
// million objects each, so a billion open files.
const maxIterRetries = 1000
