package collector

import (
	"bytes"
	"encoding/json"
	"expvar"
	"fmt"
	"net/http"
	"net/http/pprof"
	"sort"

	"github.com/conntrace/conntrace_exporter/tracer"
)

// DebugSource is what the debug endpoints read of the tracer; *tracer.Tracer
// has it.
type DebugSource interface {
	DebugNetworkMaps() (*tracer.Connections, error)
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
//	/debug/net_state       a client's baselines (?client_id=, the seed's DumpState; default DebugClient, the seed's DEBUGCLIENT "-1")
//	/debug/stats           the per-client state's counters (netstate GetStats)
//	/debug/net_maps        every connection in the kernel now, one a line: its key (BeautifyKey) and summary
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
		var buf bytes.Buffer
		for _, c := range conns.Conns {
			if key, err := c.ByteKey(&buf); err == nil {
				lines = append(lines, fmt.Sprintf("%s %s", tracer.BeautifyKey(string(key)), tracer.ConnectionSummary(c, conns.DNS)))
			} else {
				lines = append(lines, fmt.Sprintf("(no key: %v) %s", err, c))
			}
		}
		sort.Strings(lines)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		for _, l := range lines {
			fmt.Fprintln(w, l)
		}
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}
