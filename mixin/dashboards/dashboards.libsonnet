// The dashboards: an overview of the host's traffic, a drill-down on one
// peer, the workloads (cgroups) of the hosts, and the exporter's own health.
local g = import '../lib/dashboard.libsonnet';

{
  local c = $._config,
  // Every query selects with this: the configured selector and the
  // instance variable.
  local sel = '%s, instance=~"$instance"' % c.conntraceSelector,
  local instanceVar = g.queryVariable('instance', 'Instance', 'label_values(up{%s}, instance)' % c.conntraceSelector, multi=true),
  // topOverRange keeps, at every step, the 10 peers busiest over the whole
  // time range (a topk per step would show every peer that was ever in
  // the top 10).
  local topOverRange(recorded, by, k=10) =
    '%(expr)s\n  and on (%(by)s)\ntopk(%(k)d, %(avg)s)' % {
      expr: 'sum by (%s) (%s{%s})' % [by, recorded, sel],
      by: by,
      k: k,
      avg: 'sum by (%s) (avg_over_time(%s{%s}[$__range] @ end()))' % [by, recorded, sel],
    },
  // A workload is a set of workloadLabels on one instance.
  local workloadBy = std.join(', ', ['job', 'instance'] + c.workloadLabels),
  local workloadLegend =
    if std.member(c.workloadLabels, 'cgroup') then '{{instance}} {{cgroup}}'
    else std.join(' ', ['{{instance}}'] + ['{{%s}}' % l for l in c.workloadLabels]),
  // The columns of the Workloads table: instance_workload:<metric>:rate5m.
  local workloadColumns = [
    { metric: 'conntrace_bytes', name: 'Bytes/s', unit: 'Bps' },
    { metric: 'conntrace_sent_bytes', name: 'Sent/s', unit: 'Bps' },
    { metric: 'conntrace_received_bytes', name: 'Received/s', unit: 'Bps' },
    { metric: 'conntrace_retransmit_ratio', name: 'Retransmit ratio', unit: 'percentunit' },
    { metric: 'conntrace_connection_attempts', name: 'Connects/s', unit: 'cps' },
    { metric: 'conntrace_connection_failures', name: 'Failures/s', unit: 'cps' },
    { metric: 'conntrace_connection_failure_ratio', name: 'Failure ratio', unit: 'percentunit' },
  ],
  local peerVar = g.queryVariable('peer', 'Peer', 'label_values(instance_remote_addr:conntrace_sent_bytes:rate5m{%s}, remote_addr)' % sel),

  grafanaDashboards+:: {
    'conntrace-overview.json': g.dashboard(
      c,
      'conntrace-overview.json',
      'Overview',
      'Traffic of every traced host: who talks most, retransmissions, round-trip times, connections.',
      [instanceVar],
      [
        g.timeseries('Top talkers out', 'Payload bytes a second sent to the 10 busiest peers.', 'Bps', [
          g.target(topOverRange('instance_remote_addr:conntrace_sent_bytes:rate5m', 'remote_addr'), '{{remote_addr}}'),
        ]),
        g.timeseries('Top talkers in', 'Payload bytes a second received from the 10 busiest peers.', 'Bps', [
          g.target(topOverRange('instance_remote_addr:conntrace_received_bytes:rate5m', 'remote_addr'), '{{remote_addr}}'),
        ]),
        g.timeseries('Retransmit ratio, worst peers', 'Retransmitted TCP segments over data segments sent, for the 10 worst peers over the time range that receive enough segments to alert on.', 'percentunit', [
          g.target(|||
            instance_remote_addr:conntrace_retransmit_ratio:rate5m{%(sel)s}
              and on (job, instance, remote_addr)
            instance_remote_addr:conntrace_sent_segments:rate5m{%(sel)s} > %(min)g
              and on (job, instance, remote_addr)
            topk(10, avg_over_time(instance_remote_addr:conntrace_retransmit_ratio:rate5m{%(sel)s}[$__range] @ end()))
          ||| % { sel: sel, min: c.retransmitMinSegmentsPerSecond }, '{{instance}} → {{remote_addr}}'),
        ]),
        g.heatmap('RTT distribution', 'Round-trip time samples of every TCP connection, by the kernel-exact power-of-two buckets.', [
          g.target('sum by (le) (instance_remote_addr:conntrace_rtt_seconds_bucket:rate5m{%s})' % sel, '{{le}}', 'heatmap'),
        ]),
        g.timeseries('Open connections', 'Established connections open now, per instance.', 'short', [
          g.target('sum by (instance) (instance_remote_addr:conntrace_connections:sum{%s})' % sel, '{{instance}}'),
        ]),
        g.timeseries('Connections and failures', 'Connections established and TCP connects that failed, a second.', 'cps', [
          g.target('sum by (instance) (instance_remote_addr:conntrace_connections_opened:rate5m{%s})' % sel, '{{instance}} opened'),
          g.target('sum by (instance) (instance_remote_addr:conntrace_connection_failures:rate5m{%s})' % sel, '{{instance}} failed'),
        ]),
        g.heatmap('Handshake distribution', 'TCP handshakes (SYN sent or received to ESTABLISHED) of every connection; a lost SYN or SYN-ACK adds a second.', [
          g.target('sum by (le) (instance_remote_addr:conntrace_handshake_seconds_bucket:rate5m{%s})' % sel, '{{le}}', 'heatmap'),
        ]),
        g.heatmap('Connection lifetimes', 'How long TCP connections stayed established, counted as they close.', [
          g.target('sum by (le) (instance_remote_addr:conntrace_connection_duration_seconds_bucket:rate5m{%s})' % sel, '{{le}}', 'heatmap'),
        ]),
        g.timeseries('Accept queues', "How full the fullest listening ports' accept queues are now (connections waiting to be accepted over what the queue holds).", 'percentunit', [
          g.target('topk(10, instance_port:conntrace_listen_queue:ratio{%s})' % sel, '{{instance}} {{process}}:{{port}}'),
        ]),
        g.timeseries('Listen drops and SYN-ACK retransmits', 'Packets listening ports dropped (accept queue full) and SYN-ACKs they sent again, a second, for the ports with any.', 'pps', [
          g.target('instance_port:conntrace_listen_drops:rate5m{%s} > 0 or on () vector(0)' % sel, '{{instance}} {{process}}:{{port}} dropped'),
          g.target('instance_port:conntrace_listen_synack_retransmits:rate5m{%s} > 0 or on () vector(0)' % sel, '{{instance}} {{process}}:{{port}} SYN-ACKs again'),
        ]),
        g.timeseries('Failures and aborts by reason', "TCP connects that never established, and established connections that ended in an error, a second, by the kernel's reason.", 'cps', [
          g.target('sum by (reason) (instance_remote_addr_reason:conntrace_connection_failures:rate5m{%s})' % sel, 'failed: {{reason}}'),
          g.target('sum by (reason) (instance_remote_addr_reason:conntrace_connection_aborts:rate5m{%s})' % sel, 'aborted: {{reason}}'),
        ]),
        g.timeseries('Resets', 'TCP resets a second: sent and taken on connections, and sent for segments no connection took (a port nothing listens on: Linux 6.10+), for the ports with any.', 'pps', [
          g.target('sum by (instance) (instance_remote_addr:conntrace_resets_sent:rate5m{%s})' % sel, '{{instance}} sent'),
          g.target('sum by (instance) (instance_remote_addr:conntrace_resets_received:rate5m{%s})' % sel, '{{instance}} received'),
          g.target('topk(10, instance_port:conntrace_resets_no_connection:rate5m{%s} > 0) or on () vector(0)' % sel, '{{instance}} no connection on {{port}}'),
        ]),
        g.timeseries('What limited sending', "Seconds a second TCP connections had data to send (busy), and of those, waiting on the peers' receive windows (their applications read too slowly) or on a full send buffer.", 's', [
          g.target('sum by (state) (instance_remote_addr:conntrace_send_seconds:rate5m{%s})' % sel, '{{state}}'),
        ]),
        g.timeseries('Stalled on a zero window', "TCP connections now with data to send and a peer's receive window closed, by peer.", 'short', [
          g.target('sum by (instance, remote_addr) (instance_remote_addr:conntrace_zero_window_connections:sum{%s})' % sel, '{{instance}} → {{remote_addr}}'),
        ]),
      ],
    ),

    'conntrace-peer.json': g.dashboard(
      c,
      'conntrace-peer.json',
      'Peer',
      'One peer (remote address or address group) seen from the selected instances.',
      [instanceVar, peerVar],
      [
        g.timeseries('Bytes', 'Payload bytes a second to and from the peer.', 'Bps', [
          g.target('sum by (instance) (instance_remote_addr:conntrace_sent_bytes:rate5m{%s, remote_addr="$peer"})' % sel, '{{instance}} sent'),
          g.target('sum by (instance) (instance_remote_addr:conntrace_received_bytes:rate5m{%s, remote_addr="$peer"})' % sel, '{{instance}} received'),
        ]),
        g.timeseries('Retransmit ratio', 'Retransmitted over sent TCP data segments to the peer.', 'percentunit', [
          g.target('instance_remote_addr:conntrace_retransmit_ratio:rate5m{%s, remote_addr="$peer"}' % sel, '{{instance}}'),
        ]),
        g.timeseries('RTT', 'Mean and 99th percentile round-trip time to the peer.', 's', [
          g.target('instance_remote_addr:conntrace_rtt_seconds:mean5m{%s, remote_addr="$peer"}' % sel, '{{instance}} mean'),
          g.target('instance_remote_addr:conntrace_rtt_seconds:p99_5m{%s, remote_addr="$peer"}' % sel, '{{instance}} p99'),
        ]),
        g.heatmap('RTT distribution', 'Round-trip time samples to the peer.', [
          g.target('sum by (le) (instance_remote_addr:conntrace_rtt_seconds_bucket:rate5m{%s, remote_addr="$peer"})' % sel, '{{le}}', 'heatmap'),
        ]),
        g.timeseries('Open connections by port', 'Connections open to or from the peer, by service port and protocol.', 'short', [
          g.target('sum by (port, protocol) (conntrace_connections{%s, remote_addr="$peer"})' % sel, '{{protocol}}/{{port}}'),
        ]),
        g.timeseries('Bytes by port', 'Payload bytes a second exchanged with the peer, by service port and direction.', 'Bps', [
          g.target('sum by (port, direction) (rate(conntrace_sent_bytes_total{%s, remote_addr="$peer"}[$__rate_interval]))' % sel, '{{port}} {{direction}} sent'),
          g.target('sum by (port, direction) (rate(conntrace_received_bytes_total{%s, remote_addr="$peer"}[$__rate_interval]))' % sel, '{{port}} {{direction}} received'),
        ]),
        g.timeseries('Connections opened and failed by port', 'Connections established and TCP connects that failed, a second.', 'cps', [
          g.target('sum by (port) (rate(conntrace_connections_opened_total{%s, remote_addr="$peer"}[$__rate_interval]))' % sel, '{{port}} opened'),
          g.target('sum by (port) (rate(conntrace_connection_failures_total{%s, remote_addr="$peer"}[$__rate_interval]))' % sel, '{{port}} failed'),
        ]),
        g.timeseries('Loss repairs', 'How losses with the peer were repaired, a second: retransmission timeouts, fast recoveries, and retransmissions that were not needed (the peer had the data: D-SACKs).', 'ops', [
          g.target('instance_remote_addr:conntrace_retransmit_timeouts:rate5m{%s, remote_addr="$peer"} or on () vector(0)' % sel, '{{instance}} timeouts'),
          g.target('instance_remote_addr:conntrace_fast_recoveries:rate5m{%s, remote_addr="$peer"} or on () vector(0)' % sel, '{{instance}} fast recoveries'),
          g.target('instance_remote_addr:conntrace_spurious_retransmits:rate5m{%s, remote_addr="$peer"} or on () vector(0)' % sel, '{{instance}} spurious retransmits'),
        ]),
        g.timeseries('Handshake', 'Mean and 99th percentile TCP handshake time with the peer (SYN sent or received to ESTABLISHED).', 's', [
          g.target('instance_remote_addr:conntrace_handshake_seconds:mean5m{%s, remote_addr="$peer"}' % sel, '{{instance}} mean'),
          g.target('instance_remote_addr:conntrace_handshake_seconds:p99_5m{%s, remote_addr="$peer"}' % sel, '{{instance}} p99'),
        ]),
        g.timeseries('Connection lifetimes by port', 'Mean time TCP connections with the peer stayed established, by service port, as they close.', 's', [
          g.target('sum by (port) (rate(conntrace_connection_duration_seconds_sum{%s, remote_addr="$peer"}[$__rate_interval])) / sum by (port) (rate(conntrace_connection_duration_seconds_count{%s, remote_addr="$peer"}[$__rate_interval]))' % [sel, sel], '{{port}}'),
        ]),
        g.timeseries('Failures and aborts by reason', "TCP connects to the peer that never established, and connections with it that ended in an error, a second, by port and the kernel's reason.", 'cps', [
          g.target('sum by (port, reason) (rate(conntrace_connection_failures_total{%s, remote_addr="$peer"}[$__rate_interval]))' % sel, '{{port}} failed: {{reason}}'),
          g.target('sum by (port, reason) (rate(conntrace_connection_aborts_total{%s, remote_addr="$peer"}[$__rate_interval]))' % sel, '{{port}} aborted: {{reason}}'),
        ]),
        g.timeseries('Resets', 'TCP resets a second sent to the peer and taken from it.', 'pps', [
          g.target('instance_remote_addr:conntrace_resets_sent:rate5m{%s, remote_addr="$peer"} or on () vector(0)' % sel, '{{instance}} sent'),
          g.target('instance_remote_addr:conntrace_resets_received:rate5m{%s, remote_addr="$peer"} or on () vector(0)' % sel, '{{instance}} received'),
        ]),
        g.timeseries('What limited sending', "Seconds a second connections to the peer had data to send (busy), and of those, waiting on the peer's receive window or on a full send buffer.", 's', [
          g.target('sum by (instance, state) (instance_remote_addr:conntrace_send_seconds:rate5m{%s, remote_addr="$peer"})' % sel, '{{instance}} {{state}}'),
        ]),
      ],
    ),

    'conntrace-workloads.json': g.dashboard(
      c,
      'conntrace-workloads.json',
      'Workloads',
      'Traffic by workload (cgroup: systemd unit, container, Kubernetes pod) of the selected instances: who sends most, retransmits most, fails to connect. Needs the workload labels in --collector.labels (cgroup, unit, container_id, pod_uid): without them each instance is one workload.',
      [instanceVar],
      [
        g.timeseries('Top workloads by bytes', 'Payload bytes a second sent and received by the %d workloads busiest over the time range.' % c.workloadTopK, 'Bps', [
          g.target(topOverRange('instance_workload:conntrace_bytes:rate5m', workloadBy, c.workloadTopK), workloadLegend),
        ]),
        g.timeseries('Retransmit ratio, worst workloads', 'Retransmitted TCP segments over data segments sent, for the %d worst workloads over the time range that send enough segments to alert on.' % c.workloadTopK, 'percentunit', [
          g.target(|||
            instance_workload:conntrace_retransmit_ratio:rate5m{%(sel)s}
              and on (%(by)s)
            instance_workload:conntrace_sent_segments:rate5m{%(sel)s} > %(min)g
              and on (%(by)s)
            topk(%(k)d, avg_over_time(instance_workload:conntrace_retransmit_ratio:rate5m{%(sel)s}[$__range] @ end()))
          ||| % { sel: sel, by: workloadBy, min: c.retransmitMinSegmentsPerSecond, k: c.workloadTopK }, workloadLegend),
        ]),
        g.timeseries('Connection failures, top workloads', 'TCP connects that never established, a second, for the %d workloads with the most over the time range.' % c.workloadTopK, 'cps', [
          g.target(topOverRange('instance_workload:conntrace_connection_failures:rate5m', workloadBy, c.workloadTopK), workloadLegend),
        ]),
        g.timeseries('Connects, top workloads', 'TCP connects attempted (established or failed), a second, for the %d workloads with the most over the time range.' % c.workloadTopK, 'cps', [
          g.target(topOverRange('instance_workload:conntrace_connection_attempts:rate5m', workloadBy, c.workloadTopK), workloadLegend),
        ]),
        g.table(
          'Workloads',
          'Every workload of the selected instances now, busiest first: bytes a second, the retransmit ratio, TCP connects and failures.',
          [
            g.target('sum by (%s) (instance_workload:%s:rate5m{%s})' % [workloadBy, metric, sel])
            for metric in [col.metric for col in workloadColumns]
          ],
          transformations=[
            { id: 'merge', options: {} },
            {
              id: 'organize',
              options: {
                excludeByName: { Time: true, job: true },
                indexByName: {},
                renameByName: {
                  ['Value #' + std.char(std.codepoint('A') + i)]: workloadColumns[i].name
                  for i in std.range(0, std.length(workloadColumns) - 1)
                },
              },
            },
          ],
          overrides=[
            { matcher: { id: 'byName', options: col.name }, properties: [{ id: 'unit', value: col.unit }] }
            for col in workloadColumns
          ],
          sortBy=[{ displayName: workloadColumns[0].name, desc: true }],
        ),
      ],
    ),

    'conntrace-health.json': g.dashboard(
      c,
      'conntrace-health.json',
      'Exporter health',
      "conntrace_exporter's own health: its probes, what it lost, how full its maps are, its clients.",
      [instanceVar],
      [
        g.stat('Up', 'Whether Prometheus could scrape the exporter.', 'none', [
          g.target('up{%s}' % sel, '{{instance}}'),
        ]),
        g.timeseries('Tracked connections', 'TCP connections and UDP flows tracked in the kernel, and the limit of each (--tracer.max-tracked-connections).', 'short', [
          g.target('conntrace_tracked_connections{%s}' % sel, '{{instance}} {{protocol}} tracked'),
          g.target('conntrace_tracked_connections_limit{%s}' % sel, '{{instance}} limit'),
        ]),
        g.timeseries('Lost', 'What was not counted, a second, by reason.', 'short', [
          g.target('sum by (instance, reason) (rate(conntrace_lost_total{%s}[$__rate_interval]))' % sel, '{{instance}} {{reason}}'),
        ]),
        g.timeseries('BPF program runs', 'Runs a second of each BPF program (with --tracer.bpf-stats).', 'ops', [
          g.target('sum by (program) (rate(conntrace_bpf_program_runs_total{%s}[$__rate_interval]))' % sel, '{{program}}'),
        ]),
        g.timeseries('BPF time per run', 'Mean run time of each BPF program (with --tracer.bpf-stats).', 's', [
          g.target('sum by (program) (rate(conntrace_bpf_program_run_seconds_total{%s}[$__rate_interval])) / sum by (program) (rate(conntrace_bpf_program_runs_total{%s}[$__rate_interval]))' % [sel, sel], '{{program}}'),
        ]),
        g.timeseries('BPF program misses', 'Runs the kernel skipped, a second (another BPF program was running on the CPU).', 'ops', [
          g.target('sum by (program) (rate(conntrace_bpf_program_misses_total{%s}[$__rate_interval]))' % sel, '{{program}}'),
        ]),
        g.timeseries('Clients and series', 'Scrapers (client_id) held, and label sets held for this Prometheus against --collector.max-series.', 'short', [
          g.target('conntrace_clients{%s}' % sel, '{{instance}} clients'),
          g.target('conntrace_series{%s}' % sel, '{{instance}} series'),
          g.target('conntrace_series_limit{%s}' % sel, '{{instance}} series limit'),
        ]),
        g.table('Attached programs', 'Every BPF program, its hook and how it is attached.', [
          g.target('conntrace_bpf_program_info{%s}' % sel),
        ]),
        g.table('Kernel capabilities', 'What the kernel offered at start-up (1) or lacked (0); README, Kernel requirements, says what each costs.', [
          g.target('conntrace_kernel_capability{%s}' % sel),
        ]),
      ],
    ),
  },
}
