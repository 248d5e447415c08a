package tracer

import (
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/conntrace/conntrace_exporter/bpf"
)

// The catalogue holds every program of the object once, and each row says
// what the object's section says: its kind, its hook, its cgroup attach
// type. (Reading the embedded object needs no root.)
func TestCatalogueIsTheObject(t *testing.T) {
	spec, err := bpf.LoadConntrace()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, p := range catalogue {
		if seen[p.name] {
			t.Errorf("%s: twice in the catalogue", p.name)
		}
		seen[p.name] = true
		ps := spec.Programs[p.name]
		if ps == nil {
			t.Errorf("%s: in the catalogue, not in the object", p.name)
			continue
		}
		if p.wanted == nil || !slices.Contains([]string{featureTCP, featureUDP, featureDNS, featureCgroup}, p.feature) {
			t.Errorf("%s: no wanted rule or feature %q", p.name, p.feature)
		}
		type want struct {
			typ    ebpf.ProgramType
			attach ebpf.AttachType
		}
		w, ok := map[string]want{
			kindTracepoint: {ebpf.Tracing, ebpf.AttachTraceRawTp},
			kindFexit:      {ebpf.Tracing, ebpf.AttachTraceFExit},
			kindIter:       {ebpf.Tracing, ebpf.AttachTraceIter},
			kindKprobe:     {ebpf.Kprobe, ebpf.AttachNone},
			kindKretprobe:  {ebpf.Kprobe, ebpf.AttachNone},
			kindSockops:    {ebpf.SockOps, p.cgroup},
			kindSockAddr:   {ebpf.CGroupSockAddr, p.cgroup},
			kindSock:       {ebpf.CGroupSock, p.cgroup},
			kindSkb:        {ebpf.CGroupSKB, p.cgroup},
		}[p.kind]
		if !ok {
			t.Errorf("%s: attach kind %q unknown", p.name, p.kind)
			continue
		}
		if ps.Type != w.typ || ps.AttachType != w.attach {
			t.Errorf("%s (%s): type %s attach %s, the catalogue says %s %s", p.name, ps.SectionName, ps.Type, ps.AttachType, w.typ, w.attach)
		}
		switch p.kind {
		case kindTracepoint:
			if !strings.HasSuffix(p.hook, "/"+ps.AttachTo) {
				t.Errorf("%s: hook %q, the object attaches to %q", p.name, p.hook, ps.AttachTo)
			}
		case kindFexit, kindKprobe, kindKretprobe:
			if p.hook != ps.AttachTo || !strings.HasPrefix(ps.SectionName, p.kind+"/") {
				t.Errorf("%s: hook %s %q, the object's section is %q", p.name, p.kind, p.hook, ps.SectionName)
			}
		case kindIter:
			if !strings.HasPrefix(p.hook, ps.AttachTo) {
				t.Errorf("%s: hook %q, the object iterates %q", p.name, p.hook, ps.AttachTo)
			}
			if p.eachNetns != (ps.AttachTo == "tcp") {
				t.Errorf("%s: eachNetns %v for an iterator of %q", p.name, p.eachNetns, ps.AttachTo)
			}
		}
		if (p.recvParams != 0) != (p.kind == kindFexit && strings.Contains(p.hook, "recvmsg")) {
			t.Errorf("%s: recvParams %d", p.name, p.recvParams)
		}
	}
	for name := range spec.Programs {
		if !seen[name] {
			t.Errorf("%s: in the object, not in the catalogue (tracer/catalogue.go)", name)
		}
	}
}

// Whatever the choices, at most one iterator is read at each scrape (the
// tracer holds one dumpIter).
func TestOneScrapeIterator(t *testing.T) {
	for _, way := range []string{"", TCPIteratorTaskFile, TCPIteratorTCP} {
		tr := &Tracer{cfg: NewDefaultConfig(), tcpIter: way}
		n := 0
		for i := range catalogue {
			if p := &catalogue[i]; p.kind == kindIter && !p.once && p.wanted(tr) {
				n++
			}
		}
		if want := map[bool]int{true: 0, false: 1}[way == ""]; n != want {
			t.Errorf("TCP way %q: %d iterators each scrape, want %d", way, n, want)
		}
	}
}
