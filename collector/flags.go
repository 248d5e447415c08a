package collector

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/alecthomas/kingpin/v2"

	"github.com/conntrace/conntrace_exporter/internal/flagvalue"
)

// CollectorFlags are the values of the --collector.* flags.
type CollectorFlags struct {
	// Labels is --collector.labels: a comma-separated list of label names.
	Labels string
	// MaxSeries is --collector.max-series.
	MaxSeries int
}

// AddCollectorFlags adds the --collector.* flags to app and returns the
// values they take when app is parsed; Options checks them.
func AddCollectorFlags(app *kingpin.Application) *CollectorFlags {
	f := &CollectorFlags{}
	app.Flag("collector.labels", "Comma-separated labels of the traffic metrics, from: "+strings.Join(labelNames[:], ", ")+
		". Empty: no label, one series per metric. port is the service port (the local port of an incoming connection, "+
		"else the remote port); process is the command name, netns the network namespace inode; an address in an "+
		"address group of --config.file is replaced by the group's CIDR; cgroup is the socket's cgroup (v2) path, and unit, "+
		"container_id, pod_uid what that path shows of a systemd unit, a container, a Kubernetes pod (empty where it shows none).").
		Default(DefaultLabels).StringVar(&f.Labels)
	app.Flag("collector.max-series", `Label sets held per client; beyond it, new label sets are counted in one overflow series per metric, `+
		`whose labels are all "overflow", and their connections in conntrace_series_overflow_total. 0: no limit.`).
		Default(strconv.Itoa(DefaultMaxSeries)).SetValue(flagvalue.New("collector.max-series", &f.MaxSeries, flagvalue.ParseInt))
	return f
}

// Cgroups says whether the selected labels name workloads (cgroup, unit,
// container_id, pod_uid): the tracer must then name cgroups. False for
// labels Options refuses.
func (f *CollectorFlags) Cgroups() bool {
	l, err := ParseLabels(f.Labels)
	return err == nil && l.Cgroups()
}

// Options checks the flags and returns the options they select, or one
// message per bad flag, each naming it.
func (f *CollectorFlags) Options() ([]Option, []string) {
	var msgs []string
	labels, err := ParseLabels(f.Labels)
	if err != nil {
		msgs = append(msgs, fmt.Sprintf("--collector.labels=%s: %v", f.Labels, err))
	}
	if f.MaxSeries < 0 {
		msgs = append(msgs, fmt.Sprintf("--collector.max-series=%d: must be at least 0 (0: no limit)", f.MaxSeries))
	}
	if msgs != nil {
		return nil, msgs
	}
	return []Option{WithLabels(labels), WithMaxSeries(f.MaxSeries)}, nil
}
