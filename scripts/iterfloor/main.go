// Command iterfloor measures the kernel's floor of a live read: the time
// to walk the TCP socket tables of the current network namespace with an
// iter/tcp program that writes nothing, and with one that writes a record
// of the exporter's size (bpf.ConntraceConnRecord) for every socket, read
// as the exporter reads (64 KiB at a time). What the exporter's scrape
// takes above the second is its own work. scripts/bench-scale.sh runs it
// in the namespace of its connections; root only. See BENCHMARKS.md.
//
//	ip netns exec NS go run ./scripts/iterfloor [-reads 5]
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"syscall"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"

	"github.com/conntrace/conntrace_exporter/bpf"
)

// recordSize is what the exporter's iterator writes per socket.
const recordSize = int(unsafe.Sizeof(bpf.ConntraceConnRecord{}))

func main() {
	reads := flag.Int("reads", 5, "reads of each iterator")
	flag.Parse()
	if err := rlimit.RemoveMemlock(); err != nil {
		fail(err)
	}
	for _, size := range []int{0, recordSize} {
		ms, n, err := measure(size, *reads)
		if err != nil {
			fail(err)
		}
		sort.Float64s(ms)
		fmt.Printf("iter/tcp writing %d B per socket: %d bytes a read, %.0f-%.0f ms (median %.0f) over %d reads\n",
			size, n, ms[0], ms[len(ms)-1], ms[len(ms)/2], len(ms))
	}
}

// program is an iter/tcp program that writes size zero bytes per socket
// (nothing if size is 0).
func program(size int) asm.Instructions {
	insns := asm.Instructions{
		// r2 = ctx->sk_common; NULL at the end of the walk.
		asm.LoadMem(asm.R2, asm.R1, 8, asm.DWord),
		asm.JEq.Imm(asm.R2, 0, "exit"),
	}
	if size > 0 {
		insns = append(insns, asm.LoadMem(asm.R1, asm.R1, 0, asm.DWord)) // ctx->meta
		insns = append(insns, asm.LoadMem(asm.R1, asm.R1, 0, asm.DWord)) // meta->seq
		insns = append(insns, asm.Mov.Imm(asm.R3, 0))
		for off := -size; off < 0; off += 8 {
			insns = append(insns, asm.StoreMem(asm.RFP, int16(off), asm.R3, asm.DWord))
		}
		insns = append(insns,
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, int32(-size)),
			asm.Mov.Imm(asm.R3, int32(size)),
			asm.FnSeqWrite.Call(),
		)
	}
	return append(insns,
		asm.Mov.Imm(asm.R0, 0).WithSymbol("exit"),
		asm.Return(),
	)
}

// measure loads the program, attaches it and reads it reads times: the
// milliseconds of each read and the bytes of the last.
func measure(size, reads int) ([]float64, int64, error) {
	if size%8 != 0 {
		return nil, 0, fmt.Errorf("record size %d is not a multiple of 8", size)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "iterfloor",
		Type:         ebpf.Tracing,
		AttachType:   ebpf.AttachTraceIter,
		AttachTo:     "tcp",
		Instructions: program(size),
		License:      "GPL",
	})
	if err != nil {
		return nil, 0, fmt.Errorf("loading the iter/tcp program writing %d B: %w", size, err)
	}
	defer prog.Close()
	it, err := link.AttachIter(link.IterOptions{Program: prog})
	if err != nil {
		return nil, 0, fmt.Errorf("attaching the iter/tcp program: %w", err)
	}
	defer it.Close()
	buf := make([]byte, 64<<10) // the exporter's read size (readIter)
	var ms []float64
	var n int64
	for range reads {
		t0 := time.Now()
		r, err := it.Open()
		if err != nil {
			return nil, 0, fmt.Errorf("opening the iterator: %w", err)
		}
		n, err = drain(r, buf)
		r.Close()
		if err != nil {
			return nil, 0, fmt.Errorf("reading the iterator: %w", err)
		}
		ms = append(ms, float64(time.Since(t0).Microseconds())/1e3)
	}
	return ms, n, nil
}

// drain reads r to its end into buf, and returns how many bytes it read.
// The kernel ends a read() with EAGAIN after a million objects visited
// without output (the program that writes nothing, past 1,000,000
// sockets): read on, as the exporter does (tracer.readIter).
func drain(r io.Reader, buf []byte) (int64, error) {
	var n int64
	for again := 0; ; {
		k, err := r.Read(buf)
		n += int64(k)
		switch {
		case errors.Is(err, io.EOF):
			return n, nil
		case errors.Is(err, syscall.EAGAIN) && again < 1000:
			again++
		case err != nil:
			return n, err
		default:
			again = 0
		}
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "iterfloor:", err)
	os.Exit(1)
}
