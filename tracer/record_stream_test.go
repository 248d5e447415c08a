package tracer

import (
	"testing"
	"unsafe"

	"github.com/conntrace/conntrace_exporter/bpf"
)

// The iterator's output is decoded as it comes, whatever the sizes of the
// writes: records split between writes come out whole and in order, and a
// trailing partial record is an error.
func TestRecordStreamDecodesAcrossWrites(t *testing.T) {
	const n = 5
	var want [n]bpf.ConntraceConnRecord
	for i := range want {
		want[i].Cookie, want[i].SentBytes, want[i].Sport = uint64(100+i), uint64(1000*i+7), uint16(40000+i)
	}
	raw := unsafe.Slice((*byte)(unsafe.Pointer(&want[0])), n*recordSize)
	for _, chunk := range []int{1, 7, recordSize - 1, recordSize, recordSize + 3, 2*recordSize + 1, n * recordSize} {
		var got []bpf.ConntraceConnRecord
		s := recordStream{each: func(r *bpf.ConntraceConnRecord) { got = append(got, *r) }}
		for p := raw; len(p) > 0; {
			k := min(chunk, len(p))
			if w, err := s.Write(p[:k]); w != k || err != nil {
				t.Fatalf("chunk %d: Write = %d, %v", chunk, w, err)
			}
			p = p[k:]
		}
		if err := s.end(); err != nil {
			t.Fatalf("chunk %d: %v", chunk, err)
		}
		if len(got) != n {
			t.Fatalf("chunk %d: %d records, want %d", chunk, len(got), n)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Errorf("chunk %d: record %d = cookie %d sent %d, want cookie %d sent %d", chunk, i, got[i].Cookie, got[i].SentBytes, want[i].Cookie, want[i].SentBytes)
			}
		}
	}
	s := recordStream{each: func(*bpf.ConntraceConnRecord) {}}
	s.Write(raw[:recordSize+1])
	if err := s.end(); err == nil {
		t.Error("a partial record at the end: no error")
	}
}
