package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/conntrace/conntrace_exporter/tracer"
)

var httpClient = &http.Client{Timeout: 5 * time.Second}

// freePort returns a TCP port of 127.0.0.1 that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// lineLogger is an io.Writer that logs each complete line to the test log
// with a prefix, and keeps everything written.
type lineLogger struct {
	t      testing.TB
	prefix string

	mu      sync.Mutex
	all     bytes.Buffer
	partial []byte
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.all.Write(p)
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.t.Logf("%s%s", l.prefix, l.partial[:i])
		l.partial = l.partial[i+1:]
	}
	return len(p), nil
}

// flush logs an unterminated last line.
func (l *lineLogger) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.partial) > 0 {
		l.t.Logf("%s%s", l.prefix, l.partial)
		l.partial = nil
	}
}

func (l *lineLogger) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.all.String()
}

// process is a started command whose end the test waits for.
type process struct {
	cmd    *exec.Cmd
	done   chan struct{}
	err    error // of Wait, valid once done is closed
	stderr *lineLogger
}

// start starts cmd and registers a cleanup that kills it (if it still
// runs) and waits for it, whatever happens to the test.
func start(t testing.TB, cmd *exec.Cmd) *process {
	t.Helper()
	p := &process{cmd: cmd, done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", cmd.Path, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			cmd.Process.Kill()
			<-p.done
		}
		if p.stderr != nil {
			p.stderr.flush()
		}
	})
	return p
}

// stop sends sig and waits up to timeout for the exit; it returns the exit
// code, or fails the test.
func (p *process) stop(t testing.TB, sig syscall.Signal, timeout time.Duration) int {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signalling %s: %v", p.cmd.Path, err)
	}
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("%s did not exit within %s of %s", p.cmd.Path, timeout, sig)
	}
	var ee *exec.ExitError
	if p.err != nil && !errors.As(p.err, &ee) {
		t.Fatalf("waiting for %s: %v", p.cmd.Path, p.err)
	}
	code := p.cmd.ProcessState.ExitCode()
	if code < 0 {
		t.Fatalf("%s ended by a signal: %s", p.cmd.Path, p.cmd.ProcessState)
	}
	return code
}

// exited reports whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitHTTP polls url until it answers 200, the process dies, or timeout.
func waitHTTP(t testing.TB, p *process, url string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if p.exited() {
			t.Fatalf("%s exited while waiting for %s: %v", p.cmd.Path, url, p.err)
		}
		resp, err := httpClient.Get(url)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s did not answer within %s: %v", url, timeout, last)
}

// get fetches url and returns the body of a 200 answer.
func get(url string) ([]byte, error) { return getWith(httpClient, url) }

// getWith is get through hc.
func getWith(hc *http.Client, url string) ([]byte, error) {
	resp, err := hc.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	return body, nil
}

// promSample is one sample of an instant vector from Prometheus's API.
type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

// promVector runs an instant query that must give a vector.
func promVector(ctx context.Context, base, query string) ([]promSample, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v1/query?query="+url.QueryEscape(query), nil)
	if err != nil {
		return nil, err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	var r struct {
		Status    string `json:"status"`
		Error     string `json:"error"`
		ErrorType string `json:"errorType"`
		Data      struct {
			ResultType string       `json:"resultType"`
			Result     []promSample `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("query %s: %s: decoding %q: %w", query, resp.Status, body, err)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("query %s: %s: %s", query, r.ErrorType, r.Error)
	}
	if r.Data.ResultType != "vector" {
		return nil, fmt.Errorf("query %s: result type %q, want vector", query, r.Data.ResultType)
	}
	return r.Data.Result, nil
}

// promQuery runs an instant query and returns the value of its single
// sample; ok is false if the result is empty.
func promQuery(ctx context.Context, base, query string) (v float64, ok bool, err error) {
	res, err := promVector(ctx, base, query)
	if err != nil {
		return 0, false, err
	}
	switch len(res) {
	case 0:
		return 0, false, nil
	case 1:
	default:
		return 0, false, fmt.Errorf("query %s: %d samples, want 1: %v", query, len(res), res)
	}
	s, isString := res[0].Value[1].(string)
	if !isString {
		return 0, false, fmt.Errorf("query %s: value %v is not a string", query, res[0].Value[1])
	}
	v, err = strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, false, fmt.Errorf("query %s: value %q: %w", query, s, err)
	}
	return v, true, nil
}

// parseMetrics parses a text exposition.
func parseMetrics(body []byte) (map[string]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(bytes.NewReader(body))
}

// sumOf adds the counter or gauge values of the metrics of family name
// whose labels include sel; n is how many matched.
func sumOf(mfs map[string]*dto.MetricFamily, name string, sel map[string]string) (sum float64, n int) {
	mf := mfs[name]
	if mf == nil {
		return 0, 0
	}
next:
	for _, m := range mf.GetMetric() {
		labels := map[string]string{}
		for _, lp := range m.GetLabel() {
			labels[lp.GetName()] = lp.GetValue()
		}
		for k, v := range sel {
			if labels[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Untyped != nil:
			sum += m.GetUntyped().GetValue()
		}
		n++
	}
	return sum, n
}

// selector renders sel as a PromQL label matcher list, in a fixed order.
func selector(sel map[string]string, order ...string) string {
	var parts []string
	for _, k := range order {
		if v, ok := sel[k]; ok {
			parts = append(parts, fmt.Sprintf("%s=%q", k, v))
		}
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// tailFile returns the last max bytes of a file, for failure reports.
func tailFile(path string, max int64) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > max {
		f.Seek(st.Size()-max, io.SeekStart)
	}
	var b strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		b.WriteString(sc.Text())
		b.WriteByte('\n')
	}
	return b.String()
}

// requireTCP skips a test whose traffic is TCP on a kernel that cannot
// trace TCP (before Linux 5.12, or a verifier that refuses the TCP
// iterator), saying why; the kernel matrix (scripts/kernels) proves TCP on
// the kernels that can.
func requireTCP(t testing.TB) {
	t.Helper()
	if err := tracer.TCPPossible(); err != nil {
		t.Skipf("TCP is not traced on this kernel (%v): this test's traffic is TCP", err)
	}
}
