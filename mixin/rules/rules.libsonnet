// Per-peer rates: what the alerts and dashboards read. A peer is one
// remote_addr (or address group) of one exporter (job, instance). And per
// workload (a cgroup: a systemd unit, a container, a pod) of one exporter.
{
  local by = 'job, instance, remote_addr',
  local workloadBy = std.join(', ', ['job', 'instance'] + $._config.workloadLabels),
  local rate(metric, extra='', grouping=by) =
    'sum by (%s) (rate(%s{%s%s}[%s]))' % [grouping, metric, $._config.conntraceSelector, extra, $._config.rateInterval],

  prometheusRules+:: {
    groups+: [
      {
        name: 'conntrace-peer.rules',
        rules: [
          { record: 'instance_remote_addr:conntrace_sent_bytes:rate5m', expr: rate('conntrace_sent_bytes_total') },
          { record: 'instance_remote_addr:conntrace_received_bytes:rate5m', expr: rate('conntrace_received_bytes_total') },
          { record: 'instance_remote_addr:conntrace_retransmits:rate5m', expr: rate('conntrace_retransmits_total') },
          { record: 'instance_remote_addr:conntrace_sent_segments:rate5m', expr: rate('conntrace_sent_segments_total') },
          {
            record: 'instance_remote_addr:conntrace_retransmit_ratio:rate5m',
            // A peer without retransmits has ratio 0, not no data; one
            // without segments sent has no ratio.
            expr: |||
              instance_remote_addr:conntrace_retransmits:rate5m{%(conntraceSelector)s}
                /
              (instance_remote_addr:conntrace_sent_segments:rate5m{%(conntraceSelector)s} > 0)
            ||| % $._config,
          },
          { record: 'instance_remote_addr:conntrace_connection_failures:rate5m', expr: rate('conntrace_connection_failures_total') },
          // Connects this host made that established: with the failures,
          // every connect it attempted (connections the peer opened to us
          // cannot fail here).
          { record: 'instance_remote_addr:conntrace_outgoing_tcp_connections_opened:rate5m', expr: rate('conntrace_connections_opened_total', ', protocol="tcp", direction="outgoing"') },
          { record: 'instance_remote_addr:conntrace_connections_opened:rate5m', expr: rate('conntrace_connections_opened_total') },
          {
            record: 'instance_remote_addr:conntrace_connections:sum',
            expr: 'sum by (%s) (conntrace_connections{%s})' % [by, $._config.conntraceSelector],
          },
          {
            record: 'instance_remote_addr:conntrace_rtt_seconds_bucket:rate5m',
            expr: 'sum by (%s, le) (rate(conntrace_rtt_seconds_bucket{%s}[%s]))' % [by, $._config.conntraceSelector, $._config.rateInterval],
          },
          { record: 'instance_remote_addr:conntrace_rtt_seconds_count:rate5m', expr: rate('conntrace_rtt_seconds_count') },
          {
            record: 'instance_remote_addr:conntrace_rtt_seconds:mean5m',
            expr: |||
              %s
                /
              instance_remote_addr:conntrace_rtt_seconds_count:rate5m > 0
            ||| % rate('conntrace_rtt_seconds_sum'),
          },
          {
            record: 'instance_remote_addr:conntrace_rtt_seconds:p99_5m',
            expr: 'histogram_quantile(0.99, instance_remote_addr:conntrace_rtt_seconds_bucket:rate5m{%(conntraceSelector)s})' % $._config,
          },
        ],
      },
      {
        // How connections start and end: failures and aborts by reason,
        // handshakes and lives; and how their losses were repaired.
        name: 'conntrace-connection.rules',
        rules: [
          { record: 'instance_remote_addr:conntrace_retransmit_timeouts:rate5m', expr: rate('conntrace_retransmit_timeouts_total') },
          { record: 'instance_remote_addr:conntrace_fast_recoveries:rate5m', expr: rate('conntrace_fast_recoveries_total') },
          { record: 'instance_remote_addr:conntrace_spurious_retransmits:rate5m', expr: rate('conntrace_spurious_retransmits_total') },
          // By reason (refused, timeout, ...): what the kernel said.
          { record: 'instance_remote_addr_reason:conntrace_connection_failures:rate5m', expr: rate('conntrace_connection_failures_total', grouping=by + ', reason') },
          { record: 'instance_remote_addr_reason:conntrace_connection_aborts:rate5m', expr: rate('conntrace_connection_aborts_total', grouping=by + ', reason') },
          { record: 'instance_remote_addr:conntrace_connections_closed:rate5m', expr: rate('conntrace_connections_closed_total', ', protocol="tcp"') },
          // Handshakes (SYN to ESTABLISHED) and connection lives.
          {
            record: 'instance_remote_addr:conntrace_handshake_seconds_bucket:rate5m',
            expr: 'sum by (%s, le) (rate(conntrace_handshake_seconds_bucket{%s}[%s]))' % [by, $._config.conntraceSelector, $._config.rateInterval],
          },
          { record: 'instance_remote_addr:conntrace_handshake_seconds_count:rate5m', expr: rate('conntrace_handshake_seconds_count') },
          {
            record: 'instance_remote_addr:conntrace_handshake_seconds:mean5m',
            expr: |||
              %s
                /
              instance_remote_addr:conntrace_handshake_seconds_count:rate5m > 0
            ||| % rate('conntrace_handshake_seconds_sum'),
          },
          {
            record: 'instance_remote_addr:conntrace_handshake_seconds:p99_5m',
            expr: 'histogram_quantile(0.99, instance_remote_addr:conntrace_handshake_seconds_bucket:rate5m{%(conntraceSelector)s})' % $._config,
          },
          {
            record: 'instance_remote_addr:conntrace_connection_duration_seconds_bucket:rate5m',
            expr: 'sum by (%s, le) (rate(conntrace_connection_duration_seconds_bucket{%s}[%s]))' % [by, $._config.conntraceSelector, $._config.rateInterval],
          },
        ],
      },
      {
        // Resets and what limited sending, per peer.
        name: 'conntrace-tcp-limits.rules',
        rules: [
          { record: 'instance_remote_addr:conntrace_resets_sent:rate5m', expr: rate('conntrace_resets_sent_total') },
          { record: 'instance_remote_addr:conntrace_resets_received:rate5m', expr: rate('conntrace_resets_received_total') },
          // Seconds a second: busy (any data to send, the two limits
          // included), limited by the peer's receive window, by the send
          // buffer; one series name, the state a label.
          { record: 'instance_remote_addr:conntrace_send_seconds:rate5m', expr: rate('conntrace_send_busy_seconds_total'), labels: { state: 'busy' } },
          { record: 'instance_remote_addr:conntrace_send_seconds:rate5m', expr: rate('conntrace_send_rwnd_limited_seconds_total'), labels: { state: 'rwnd_limited' } },
          { record: 'instance_remote_addr:conntrace_send_seconds:rate5m', expr: rate('conntrace_send_sndbuf_limited_seconds_total'), labels: { state: 'sndbuf_limited' } },
          {
            record: 'instance_remote_addr:conntrace_zero_window_connections:sum',
            expr: 'sum by (%s) (conntrace_zero_window_connections{%s})' % [by, $._config.conntraceSelector],
          },
        ],
      },
      {
        // Per workload (workloadLabels: cgroup, unit, container_id,
        // pod_uid by default) of each exporter: the Workloads dashboard.
        // Without those labels in --collector.labels, one series per
        // exporter, the workload labels empty.
        name: 'conntrace-workload.rules',
        rules: [
          { record: 'instance_workload:conntrace_sent_bytes:rate5m', expr: rate('conntrace_sent_bytes_total', grouping=workloadBy) },
          { record: 'instance_workload:conntrace_received_bytes:rate5m', expr: rate('conntrace_received_bytes_total', grouping=workloadBy) },
          {
            // Both directions: the top workloads by bytes.
            record: 'instance_workload:conntrace_bytes:rate5m',
            expr: |||
              instance_workload:conntrace_sent_bytes:rate5m{%(conntraceSelector)s}
                +
              instance_workload:conntrace_received_bytes:rate5m{%(conntraceSelector)s}
            ||| % $._config,
          },
          { record: 'instance_workload:conntrace_retransmits:rate5m', expr: rate('conntrace_retransmits_total', grouping=workloadBy) },
          { record: 'instance_workload:conntrace_sent_segments:rate5m', expr: rate('conntrace_sent_segments_total', grouping=workloadBy) },
          {
            // Of the sums: a workload's busy connections weigh more than
            // its idle ones.
            record: 'instance_workload:conntrace_retransmit_ratio:rate5m',
            expr: |||
              instance_workload:conntrace_retransmits:rate5m{%(conntraceSelector)s}
                /
              (instance_workload:conntrace_sent_segments:rate5m{%(conntraceSelector)s} > 0)
            ||| % $._config,
          },
          { record: 'instance_workload:conntrace_outgoing_tcp_connections_opened:rate5m', expr: rate('conntrace_connections_opened_total', ', protocol="tcp", direction="outgoing"', workloadBy) },
          { record: 'instance_workload:conntrace_connection_failures:rate5m', expr: rate('conntrace_connection_failures_total', grouping=workloadBy) },
          {
            // TCP connects attempted: established and failed. A workload
            // has no failures series until one failed, and may have no
            // established one if every connect failed.
            record: 'instance_workload:conntrace_connection_attempts:rate5m',
            expr: |||
              (
                instance_workload:conntrace_outgoing_tcp_connections_opened:rate5m{%(conntraceSelector)s}
                  +
                instance_workload:conntrace_connection_failures:rate5m{%(conntraceSelector)s}
              )
                or
              instance_workload:conntrace_outgoing_tcp_connections_opened:rate5m{%(conntraceSelector)s}
                or
              instance_workload:conntrace_connection_failures:rate5m{%(conntraceSelector)s}
            ||| % $._config,
          },
          {
            // 0 for a workload that attempted connects and none failed.
            record: 'instance_workload:conntrace_connection_failure_ratio:rate5m',
            expr: |||
              (
                instance_workload:conntrace_connection_failures:rate5m{%(conntraceSelector)s}
                  or
                0 * instance_workload:conntrace_connection_attempts:rate5m{%(conntraceSelector)s}
              )
                /
              (instance_workload:conntrace_connection_attempts:rate5m{%(conntraceSelector)s} > 0)
            ||| % $._config,
          },
        ],
      },
      {
        // Listening ports: one per (job, instance, netns, port).
        name: 'conntrace-listen.rules',
        rules: [
          { record: 'instance_port:conntrace_listen_drops:rate5m', expr: rate('conntrace_listen_drops_total', grouping='job, instance, netns, port, process') },
          { record: 'instance_port:conntrace_listen_synack_retransmits:rate5m', expr: rate('conntrace_listen_synack_retransmits_total', grouping='job, instance, netns, port, process') },
          // Resets for segments no connection took: a port nothing
          // listens on (Linux 6.10+).
          { record: 'instance_port:conntrace_resets_no_connection:rate5m', expr: rate('conntrace_resets_no_connection_total', grouping='job, instance, netns, port') },
          {
            record: 'instance_port:conntrace_listen_queue:ratio',
            // How full the accept queue is now; no ratio for a limit of 0.
            expr: |||
              conntrace_listen_queue_length{%(conntraceSelector)s}
                /
              (conntrace_listen_queue_limit{%(conntraceSelector)s} > 0)
            ||| % $._config,
          },
        ],
      },
    ],
  },
}
