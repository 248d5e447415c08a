// Package nsexec runs a function inside a network namespace, on an OS
// thread of its own, for the tracer (reading /proc of a namespace) and the
// tests (creating sockets in their namespaces).
package nsexec

import (
	"errors"
	"runtime"

	"github.com/vishvananda/netns"
)

// Do runs f on an OS thread moved into ns, and moves it back. Sockets f
// creates stay in ns. If the thread cannot be moved back it is not unlocked,
// so it dies with its goroutine instead of running other code in ns.
func Do(ns netns.NsHandle, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			errc <- err
			return
		}
		ferr := f()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// DoPath is Do for the namespace at path (/run/netns/NAME, /proc/PID/ns/net).
func DoPath(path string, f func() error) error {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return err
	}
	defer ns.Close()
	return Do(ns, f)
}
