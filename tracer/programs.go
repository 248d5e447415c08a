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

// programs maps attachment names to the loaded programs.
func (t *Tracer) programs() map[string]*ebpf.Program {
	return map[string]*ebpf.Program{
		"handle_set_state":    t.objs.HandleSetState,
		"handle_destroy_sock": t.objs.HandleDestroySock,
		"handle_sockops":      t.objs.HandleSockops,
		"dump_conns":          t.objs.DumpConns,
		"seed_listeners":      t.objs.SeedListeners,
		"seed_conns":          t.objs.SeedConns,
		"udp_sendmsg4":        t.objs.UdpSendmsg4,
		"udp_sendmsg6":        t.objs.UdpSendmsg6,
		"udp_recvmsg4":        t.objs.UdpRecvmsg4,
		"udp_recvmsg6":        t.objs.UdpRecvmsg6,
		"handle_send_length":  t.objs.HandleSendLength,
		"handle_recv_length":  t.objs.HandleRecvLength,
		"dns_ingress":         t.objs.DnsIngress,
	}
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
