package cgroup

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	// maxWalkDepth is how many levels below the root a walk descends. The
	// kernel sets no limit by default (cgroup.max.depth is "max"), and a
	// delegated user could nest cgroups without end; real hierarchies are a
	// handful of levels deep.
	maxWalkDepth = 64
	// walkBufSize is the getdents buffer a walk keeps per level it is in
	// (a directory is read a buffer at a time, so one with a million
	// children costs no more memory than a small one): one per level, at
	// most 65, a handful in real hierarchies.
	walkBufSize = 4096
	// listBufSize is the buffer of CreatedAll's listings, one per call:
	// larger, as the directory it lists is one with many children coming.
	listBufSize = 8192
)

// walker walks a cgroup2 mount, depth first, without following symbolic
// links and without leaving the mount's file system, and hands each cgroup
// it finds to the cache as it goes (Resolver.add): it holds no list of what
// it found, so a walk costs the cache's memory plus its buffers, not a
// second copy of every path; and as it builds each path in one reused
// buffer, a cgroup the cache already names at that path costs no
// allocation at all.
type walker struct {
	r     *Resolver
	start uint64 // the Resolver.seq its view is from
	gen   uint64 // the Resolver.gen it marks the cgroups it finds with
	dev   uint64 // the root's device: directories on another are not cgroups
	path  []byte // the path of the directory being read
	bufs  [][]byte
	// beyond counts the directories deeper than maxWalkDepth (whose
	// subtrees are not read).
	beyond uint64
	// complete is cleared when the walk missed a cgroup: a
	// directory that failed to read for any reason but having vanished.
	// Only a complete walk may take a cgroup it did not find as removed.
	complete bool
}

// walk finds the cgroups below the root, the root included as "/". The
// error, naming the root, is for the root itself: what vanishes or fails
// below it is skipped.
func (w *walker) walk() error {
	root := w.r.root
	// O_NOFOLLOW: a root that is a symbolic link is refused, as ID (which
	// lstats the root) would find no directory on its file system.
	fd, err := openDir(root, unix.O_NOFOLLOW)
	if err != nil {
		return fmt.Errorf("cgroup root %s: %w", root, err)
	}
	defer unix.Close(fd)
	st, err := fstat(fd)
	if err != nil {
		return fmt.Errorf("cgroup root %s: %w", root, err)
	}
	w.dev = uint64(st.Dev) // Dev is uint32 on some platforms
	w.complete = true
	w.path = append(w.path[:0], '/')
	w.found(st.Ino, 0) // the root is trusted, and has no component
	if err := w.dir(fd, 0, 0); err != nil {
		return fmt.Errorf("cgroup root %s: %w", root, err)
	}
	return nil
}

// dir walks the directories in the directory fd, the cgroup at w.path,
// depth levels below the root, whose first trusted components are trusted.
func (w *walker) dir(fd, depth, trusted int) error {
	for len(w.bufs) <= depth {
		w.bufs = append(w.bufs, nil)
	}
	if w.bufs[depth] == nil {
		w.bufs[depth] = make([]byte, walkBufSize)
	}
	d := dirents{fd: fd, buf: w.bufs[depth]}
	for {
		_, name, ok, err := d.next()
		if err != nil {
			return err
		}
		if !ok {
			return nil
		}
		cfd, err := openChild(fd, name, unix.O_RDONLY)
		switch {
		case err == nil:
			w.child(cfd, name, depth, trusted)
			unix.Close(cfd)
		case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENOTDIR), errors.Is(err, unix.ELOOP):
			// Vanished, or no directory after all (its type was unknown,
			// or it is a symbolic link).
		default:
			w.complete = false // unreadable: missed, and so its subtree
		}
	}
}

// child adds the directory fd, named name in the directory at w.path, and
// walks it.
func (w *walker) child(fd int, name []byte, depth, trusted int) {
	st, err := fstat(fd)
	if err != nil {
		w.complete = false
		return
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR || uint64(st.Dev) != w.dev {
		return
	}
	if depth >= maxWalkDepth {
		// Counted, not held. The walk stays complete: no entry is
		// that deep (CreatedAll does not add one either), so it
		// misses none it holds, and a user nesting deep cannot keep
		// the cgroups of lost rmdir events named for ever.
		w.beyond++
		return
	}
	n := len(w.path)
	if n > 1 {
		w.path = append(w.path, '/')
	}
	w.path = append(w.path, name...)
	trusted = childTrust(depth, trusted, st.Uid, w.r.owner)
	w.found(st.Ino, trusted)
	if err := w.dir(fd, depth+1, trusted); err != nil && !errors.Is(err, unix.ENOENT) {
		w.complete = false
	}
	w.path = w.path[:n]
}

// found hands the cgroup id at w.path to the cache.
func (w *walker) found(id uint64, trusted int) {
	r := w.r
	r.mu.Lock()
	if e := r.add(id, w.path, trusted, w.start, r.now()); e != nil && e.seen < w.gen {
		e.seen = w.gen
	}
	r.mu.Unlock()
}

// childTrust is how many leading components of a child's path are trusted:
// all of them when its parent's are (the parent is depth levels below the
// root, trusted of them trusted) and its directory is owned by owner (root),
// else as many as of its parent's.
func childTrust(depth, trusted int, uid, owner uint32) int {
	if trusted == depth && uid == owner {
		return depth + 1
	}
	return trusted
}

// listChildren reads the directory of the cgroup at parent once, and calls
// fn with the name and stat of each child directory on device dev whose
// inode number, read from its directory entry, want accepts, until fn
// returns false. Only those children are statted: the siblings cost a
// directory entry each, not a system call.
func (r *Resolver) listChildren(parent string, dev uint64, buf []byte, want func(ino uint64) bool, fn func(name []byte, st *unix.Stat_t) bool) {
	abs := r.root
	if parent != "/" {
		abs += parent
	}
	fd, err := openDir(abs, 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	r.listings.Add(1)
	d := dirents{fd: fd, buf: buf}
	for {
		ino, name, ok, err := d.next()
		if err != nil || !ok {
			return
		}
		if !want(ino) {
			continue
		}
		r.childStats.Add(1)
		cfd, err := openChild(fd, name, unix.O_PATH)
		if err != nil {
			continue
		}
		st, err := fstat(cfd)
		unix.Close(cfd)
		if err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR || uint64(st.Dev) != dev || st.Ino != ino {
			continue
		}
		if !fn(name, &st) {
			return
		}
	}
}

// dirents reads a directory's entries with getdents64(2), parsing the
// kernel's linux_dirent64 records itself: unlike os.File.ReadDir, that
// gives each entry's inode number (d_ino), which on the cgroup2 file system
// is the cgroup id, so a listing picks the children it wants without a stat
// of each sibling.
type dirents struct {
	fd   int
	buf  []byte
	rest []byte // the records of the last read not yet returned
}

// The layout of a linux_dirent64 record: d_ino (8 bytes), d_off (8),
// d_reclen (2), d_type (1), then d_name, NUL-terminated.
const (
	direntReclen = 16
	direntType   = 18
	direntName   = 19
)

// errBadDirent is a record that does not parse: the buffer's end cuts it,
// or its name has no NUL.
var errBadDirent = errors.New("malformed directory entry from getdents64")

// next returns the next entry that may be a directory (of type directory,
// or unknown: the file system did not say), skipping "." and "..": its
// inode number and its name. The name is in d's buffer, valid until the
// next call, and followed there by the kernel's NUL (openChild passes it as
// it is). ok is false at the end.
func (d *dirents) next() (ino uint64, name []byte, ok bool, err error) {
	for {
		if len(d.rest) == 0 {
			n, err := getdents(d.fd, d.buf)
			if err != nil {
				return 0, nil, false, err
			}
			if n <= 0 {
				return 0, nil, false, nil
			}
			d.rest = d.buf[:n]
		}
		if len(d.rest) < direntName {
			return 0, nil, false, errBadDirent
		}
		reclen := int(binary.NativeEndian.Uint16(d.rest[direntReclen:]))
		if reclen <= direntName || reclen > len(d.rest) {
			return 0, nil, false, errBadDirent
		}
		rec := d.rest[:reclen]
		d.rest = d.rest[reclen:]
		name := rec[direntName:]
		i := bytes.IndexByte(name, 0)
		if i < 0 {
			return 0, nil, false, errBadDirent
		}
		name = name[:i]
		if t := rec[direntType]; t != unix.DT_DIR && t != unix.DT_UNKNOWN ||
			len(name) == 0 || string(name) == "." || string(name) == ".." {
			continue
		}
		return binary.NativeEndian.Uint64(rec), name, true, nil
	}
}

func getdents(fd int, buf []byte) (int, error) {
	for {
		n, err := unix.Getdents(fd, buf)
		if err != unix.EINTR {
			return n, err
		}
	}
}

// openDir opens the directory abs for reading.
func openDir(abs string, flags int) (int, error) {
	for {
		fd, err := unix.Open(abs, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC|flags, 0)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

// openChild opens the directory name in the directory dirfd, not following
// a symbolic link. name must be a dirents name: it is passed to openat(2)
// where the kernel wrote it, NUL-terminated, since the unix package's
// Openat would copy it into a new string first: a walk of a tree the cache
// already names allocates nothing per cgroup.
func openChild(dirfd int, name []byte, flags int) (int, error) {
	for {
		fd, _, errno := syscall.Syscall6(unix.SYS_OPENAT, uintptr(dirfd), uintptr(unsafe.Pointer(&name[0])),
			uintptr(flags|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC), 0, 0, 0)
		switch errno {
		case 0:
			return int(fd), nil
		case unix.EINTR:
			continue
		default:
			return -1, errno
		}
	}
}

func fstat(fd int) (unix.Stat_t, error) {
	var st unix.Stat_t
	for {
		err := unix.Fstat(fd, &st)
		if err != unix.EINTR {
			return st, err
		}
	}
}

// childPath appends the path of the cgroup name in the cgroup at parent to
// b.
func childPath(b []byte, parent string, name []byte) []byte {
	b = append(b, parent...)
	if parent != "/" {
		b = append(b, '/')
	}
	return append(b, name...)
}

// depth is how many levels below the root the cgroup at path is: a
// held path, or the bytes of one being built.
func depth[P ~string | ~[]byte](path P) int {
	if len(path) == 1 && path[0] == '/' {
		return 0
	}
	n := 0
	for i := range len(path) {
		if path[i] == '/' {
			n++
		}
	}
	return n
}

// inode returns the inode number (the cgroup id) and device of fi.
func inode(fi fs.FileInfo) (ino, dev uint64, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, false
	}
	return st.Ino, uint64(st.Dev), true // Dev is uint32 on some platforms
}
