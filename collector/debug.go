package collector

import (
	"encoding/json"
	"expvar"
	"fmt"
	"io"
	"net/http"
	"net/http/pprof"
	"sort"
	"strconv"
	"strings"

	"github.com/conntrace/conntrace_exporter/tracer"
)

// DebugSource is what the debug endpoints read of the tracer; *tracer.Tracer
// has it.
type DebugSource interface {
	DebugNetworkMaps() (*tracer.Connections, error)
	PortMapping() *tracer.PortMapping
}

var _ DebugSource = (*tracer.Tracer)(nil)

// StateDebug is what the debug endpoints read of the per-client state (the
// seed's NetworkState debug calls); (*Handler).State gives it.
type StateDebug interface {
	DumpState(clientID string) map[string]any
	GetStats() map[string]any
}

// DebugClient is the client /debug/net_state shows without ?client_id= (the
// seed's DEBUGCLIENT).
const DebugClient = "-1"

// NewDebugHandler serves the debug endpoints, for --debug.listen-address
// (off by default; they show every connection of the host, so bind them to
// localhost):
//
//	/debug/pprof/          Go profiles
//	/debug/vars            expvar
//	/debug/net_state       a client's series offsets (?client_id=, the seed's DumpState; default DebugClient, the seed's DEBUGCLIENT "-1")
//	/debug/stats           the per-client state's counters (netstate GetStats)
//	/debug/net_maps        every connection in the kernel now, one a line: its key (DebugKey) and summary
//	/debug/ports           the ports something listens on (TCP) or is bound to (UDP), one network namespace (inode) a line
func NewDebugHandler(src DebugSource, state StateDebug) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.Handle("/debug/vars", expvar.Handler())
	mux.HandleFunc("/debug/net_state", func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Query().Get(ClientIDParam)
		if id == "" {
			id = DebugClient
		}
		writeJSON(w, state.DumpState(id))
	})
	mux.HandleFunc("/debug/stats", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, state.GetStats())
	})
	mux.HandleFunc("/debug/net_maps", func(w http.ResponseWriter, r *http.Request) {
		conns, err := src.DebugNetworkMaps()
		if err != nil {
			http.Error(w, "reading the kernel's connections: "+err.Error(), http.StatusInternalServerError)
			return
		}
		lines := make([]string, 0, len(conns.Conns))
		for _, c := range conns.Conns {
			lines = append(lines, c.DebugKey()+" "+tracer.ConnectionSummary(c, conns.DNS))
		}
		sort.Strings(lines)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		for _, l := range lines {
			fmt.Fprintln(w, l)
		}
	})
	mux.HandleFunc("/debug/ports", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		var ports []tracer.PortKey
		if pm := src.PortMapping(); pm != nil {
			ports = pm.Ports()
		}
		writePorts(w, ports)
	})
	return mux
}

// writePorts writes ports (sorted by namespace, protocol, port) one
// namespace a line: "netns 4026531840 tcp 22,9476 udp 53".
func writePorts(w io.Writer, ports []tracer.PortKey) {
	for i := 0; i < len(ports); {
		ns := ports[i].NetNS
		fmt.Fprintf(w, "netns %d", ns)
		for i < len(ports) && ports[i].NetNS == ns {
			typ := ports[i].Type
			var nums []string
			for ; i < len(ports) && ports[i].NetNS == ns && ports[i].Type == typ; i++ {
				nums = append(nums, strconv.Itoa(int(ports[i].Port)))
			}
			fmt.Fprintf(w, " %s %s", typ, strings.Join(nums, ","))
		}
		fmt.Fprintln(w)
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}
