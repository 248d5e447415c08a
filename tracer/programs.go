package tracer

import (
	"time"

	"github.com/cilium/ebpf"
)

// ProgramStat is one attached program and its kernel run statistics.
type ProgramStat struct {
	Attachment
	// Runs and RunTime count only while the kernel's BPF statistics are on
	// (Config.BPFStats, kernel.bpf_stats_enabled); Enabled says so.
	Runs    uint64
	RunTime time.Duration
	// RecursionMisses counts runs the kernel skipped because another BPF
	// program was running on the CPU: events this program never saw.
	RecursionMisses uint64
	Enabled         bool
}

// programs maps program names to the loaded programs.
func (t *Tracer) programs() map[string]*ebpf.Program {
	return programsByName(&t.objs.ConntracePrograms)
}

// ProgramStats returns every attached program with its statistics. A
// program whose statistics cannot be read is returned with zeros.
func (t *Tracer) ProgramStats() []ProgramStat {
	progs := t.programs()
	out := make([]ProgramStat, 0, len(t.attachments))
	for _, a := range t.attachments {
		ps := ProgramStat{Attachment: a, Enabled: t.stats != nil}
		if p := progs[a.Program]; p != nil {
			if st, err := p.Stats(); err == nil {
				ps.Runs, ps.RunTime, ps.RecursionMisses = st.RunCount, st.Runtime, st.RecursionMisses
			}
		}
		out = append(out, ps)
	}
	return out
}
