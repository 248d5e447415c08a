// Alerts on the network (per peer) and on the exporter itself. Each has a
// runbook section in mixin/README.md, linked by runbook_url.
{
  // The network alerts leave out the overflow series (labels "overflow"):
  // it mixes every peer beyond --collector.max-series.
  local c = $._config { peerSelector: $._config.conntraceSelector + ', remote_addr!="overflow"' },
  local runbook(name) = 'https://github.com/conntrace/conntrace_exporter/blob/main/mixin/README.md#' + std.asciiLower(name),
  local alert(name, severity, expr, forDuration, summary, description) = {
    alert: name,
    expr: expr,
    'for': forDuration,
    labels: { severity: severity },
    annotations: {
      summary: summary,
      description: description,
      runbook_url: runbook(name),
    },
  },

  prometheusAlerts+:: {
    groups+: [
      {
        name: 'conntrace-network',
        rules: [
          alert(
            'ConntraceHighRetransmitRatio',
            'warning',
            |||
              instance_remote_addr:conntrace_retransmit_ratio:rate5m{%(peerSelector)s} > %(retransmitRatioThreshold)g
              and
              instance_remote_addr:conntrace_sent_segments:rate5m{%(peerSelector)s} > %(retransmitMinSegmentsPerSecond)g
            ||| % c,
            c.retransmitFor,
            'TCP segments to a peer are often retransmitted.',
            '{{ $labels.instance }} retransmits {{ $value | humanizePercentage }} as many TCP segments to {{ $labels.remote_addr }} as it sends data segments (threshold %g%%): packets are lost on the way, or the peer is overloaded.' % (c.retransmitRatioThreshold * 100),
          ),
          alert(
            'ConntraceRTTAboveUsual',
            'warning',
            |||
              instance_remote_addr:conntrace_rtt_seconds:mean5m{%(peerSelector)s}
                > %(rttFactor)g * avg_over_time(instance_remote_addr:conntrace_rtt_seconds:mean5m{%(peerSelector)s}[%(rttBaseline)s] offset %(rttBaselineOffset)s)
              and
              instance_remote_addr:conntrace_rtt_seconds:mean5m{%(peerSelector)s} > %(rttMinSeconds)g
              and
              instance_remote_addr:conntrace_rtt_seconds_count:rate5m{%(peerSelector)s} > %(rttMinSamplesPerSecond)g
            ||| % c,
            c.rttFor,
            'Round-trip time to a peer is far above its usual.',
            'The mean RTT from {{ $labels.instance }} to {{ $labels.remote_addr }} is {{ $value | humanizeDuration }}, more than %g times its mean over the %s before the last %s.' % [c.rttFactor, c.rttBaseline, c.rttBaselineOffset],
          ),
          // One alert per reason: refused (nothing listens) and timeout
          // (a firewall drops) have different owners.
          alert(
            'ConntraceConnectionFailuresRising',
            'warning',
            |||
              instance_remote_addr_reason:conntrace_connection_failures:rate5m{%(peerSelector)s}
                / on (job, instance, remote_addr) group_left ()
              (
                instance_remote_addr:conntrace_connection_failures:rate5m{%(peerSelector)s}
                + on (job, instance, remote_addr)
                instance_remote_addr:conntrace_outgoing_tcp_connections_opened:rate5m{%(peerSelector)s}
              )
                > %(connectionFailureRatioThreshold)g
              and
              instance_remote_addr_reason:conntrace_connection_failures:rate5m{%(peerSelector)s} > %(connectionFailuresMinPerSecond)g
            ||| % c,
            c.connectionFailuresFor,
            'TCP connections to a peer are failing.',
            '{{ $value | humanizePercentage }} of the TCP connects from {{ $labels.instance }} to {{ $labels.remote_addr }} never established, reason {{ $labels.reason }} (threshold %g%%).' % (c.connectionFailureRatioThreshold * 100),
          ),
          alert(
            'ConntraceHandshakeAboveUsual',
            'warning',
            |||
              instance_remote_addr:conntrace_handshake_seconds:mean5m{%(peerSelector)s}
                > %(handshakeFactor)g * avg_over_time(instance_remote_addr:conntrace_handshake_seconds:mean5m{%(peerSelector)s}[%(handshakeBaseline)s] offset %(handshakeBaselineOffset)s)
              and
              instance_remote_addr:conntrace_handshake_seconds:mean5m{%(peerSelector)s} > %(handshakeMinSeconds)g
              and
              instance_remote_addr:conntrace_handshake_seconds_count:rate5m{%(peerSelector)s} > %(handshakeMinPerSecond)g
            ||| % c,
            c.handshakeFor,
            'TCP handshakes with a peer take far longer than usual.',
            'The mean TCP handshake between {{ $labels.instance }} and {{ $labels.remote_addr }} takes {{ $value | humanizeDuration }}, more than %g times its mean over the %s before the last %s.' % [c.handshakeFactor, c.handshakeBaseline, c.handshakeBaselineOffset],
          ),
          // Timeouts, not fast recovery, repair most losses: whole round
          // trips without an ACK (a path that drops everything for a while,
          // or losses at the end of exchanges). A kernel without fast
          // recovery counts (before 6.4) has every loss a timeout here once
          // timeouts come at all: the minimum rate keeps quiet peers out.
          alert(
            'ConntraceRetransmitTimeoutsDominate',
            'warning',
            |||
              instance_remote_addr:conntrace_retransmit_timeouts:rate5m{%(peerSelector)s}
                /
              (
                instance_remote_addr:conntrace_retransmit_timeouts:rate5m{%(peerSelector)s}
                + on (job, instance, remote_addr)
                (
                  instance_remote_addr:conntrace_fast_recoveries:rate5m{%(peerSelector)s}
                  or
                  instance_remote_addr:conntrace_retransmit_timeouts:rate5m{%(peerSelector)s} * 0
                )
              )
                > %(timeoutShareThreshold)g
              and
              instance_remote_addr:conntrace_retransmit_timeouts:rate5m{%(peerSelector)s} > %(timeoutsMinPerSecond)g
            ||| % c,
            c.timeoutsFor,
            'Losses to a peer are repaired by timeouts, not fast recovery.',
            '{{ $value | humanizePercentage }} of the loss repairs between {{ $labels.instance }} and {{ $labels.remote_addr }} are retransmission timeouts (threshold %g%%): each stalls the connection for at least the minimum RTO (200 ms by default).' % (c.timeoutShareThreshold * 100),
          ),
          alert(
            'ConntraceConnectionsAborted',
            'warning',
            |||
              instance_remote_addr_reason:conntrace_connection_aborts:rate5m{%(peerSelector)s}
                / on (job, instance, remote_addr) group_left ()
              (instance_remote_addr:conntrace_connections_closed:rate5m{%(peerSelector)s} > 0)
                > %(connectionAbortRatioThreshold)g
              and
              instance_remote_addr_reason:conntrace_connection_aborts:rate5m{%(peerSelector)s} > %(connectionAbortsMinPerSecond)g
            ||| % c,
            c.connectionAbortsFor,
            'Established TCP connections with a peer end in errors.',
            '{{ $value | humanizePercentage }} of the TCP connections between {{ $labels.instance }} and {{ $labels.remote_addr }} that closed were aborted, reason {{ $labels.reason }} (threshold %g%%).' % (c.connectionAbortRatioThreshold * 100),
          ),
          alert(
            'ConntraceZeroWindowStall',
            'warning',
            // The time waiting on the window, not only the gauge: a slow
            // reader's flows touch a zero window now and then.
            |||
              instance_remote_addr:conntrace_send_seconds:rate5m{%(peerSelector)s, state="rwnd_limited"}
                / ignoring (state)
              (instance_remote_addr:conntrace_send_seconds:rate5m{%(peerSelector)s, state="busy"} > %(zeroWindowMinBusySeconds)g)
                > %(rwndLimitedShareThreshold)g
              and ignoring (state)
              instance_remote_addr:conntrace_zero_window_connections:sum{%(peerSelector)s} > 0
            ||| % c,
            c.zeroWindowFor,
            'Sending to a peer is stalled on its receive window.',
            '{{ $labels.instance }} spent {{ $value | humanizePercentage }} of the time it had data for {{ $labels.remote_addr }} waiting on its receive window (threshold %g%%), with connections stalled on a zero window now: the application there does not read, or reads too slowly.' % (c.rwndLimitedShareThreshold * 100),
          ),
        ],
      },
      {
        name: 'conntrace-listen',
        rules: [
          alert(
            'ConntraceListenerDropping',
            'warning',
            // Drops while the accept queue was seen full: a listener also
            // drops packets with room in its queue (TCP_DEFER_ACCEPT's
            // bare ACKs, a pending handshake's SYN again), which is no
            // saturation.
            |||
              instance_port:conntrace_listen_drops:rate5m{%(conntraceSelector)s} > %(listenDropsMinPerSecond)g
              and on (job, instance, netns, port, process)
              max_over_time(instance_port:conntrace_listen_queue:ratio{%(conntraceSelector)s}[%(listenQueueWindow)s]) >= 1
            ||| % c,
            c.listenDropsFor,
            'A listening port drops connections.',
            'Port {{ $labels.port }} ({{ $labels.process }}) on {{ $labels.instance }}, network namespace {{ $labels.netns }}, drops {{ $value | humanize }} packets a second with its accept queue full: the application does not accept fast enough, or its backlog is too small.',
          ),
        ],
      },
      {
        name: 'conntrace-exporter',
        rules: [
          alert(
            'ConntraceLosingData',
            'warning',
            // recursion_misses: ConntraceBPFProgramMisses says which program.
            'sum by (job, instance, reason) (increase(conntrace_lost_total{%(conntraceSelector)s, reason!="recursion_misses"}[%(lostWindow)s])) > 0' % c,
            c.lostFor,
            'The exporter is not counting everything.',
            'conntrace_exporter on {{ $labels.instance }} lost {{ $value | humanize }} connections or events in the last %s, reason {{ $labels.reason }}: its traffic counters are below the truth.' % c.lostWindow,
          ),
          alert(
            'ConntraceTrackedConnectionsNearLimit',
            'warning',
            |||
              conntrace_tracked_connections{%(conntraceSelector)s}
                / on (job, instance) group_left
              conntrace_tracked_connections_limit{%(conntraceSelector)s}
                > %(trackedRatioThreshold)g
            ||| % c,
            c.trackedFor,
            'The exporter is close to its tracked-connection limit.',
            'conntrace_exporter on {{ $labels.instance }} tracks {{ $value | humanizePercentage }} of --tracer.max-tracked-connections {{ $labels.protocol }} connections: new ones beyond the limit will not be traced.',
          ),
          alert(
            'ConntraceBPFProgramMisses',
            'warning',
            |||
              sum by (job, instance, program) (increase(conntrace_bpf_program_misses_total{%(conntraceSelector)s}[%(lostWindow)s])) > 0
              or
              sum by (job, instance, probe) (delta(conntrace_probe_misses{%(conntraceSelector)s}[%(lostWindow)s])) > 0
            ||| % c,
            c.missesFor,
            'Kernel probes are missing events.',
            "On {{ $labels.instance }}, {{ if $labels.program }}BPF program {{ $labels.program }} missed {{ $value | humanize }} runs in the last %s: the events it did not see are not counted.{{ else }}kprobe {{ $labels.probe }} missed {{ $value | humanize }} hits in the last %s (from kprobe_profile, which lists every tool's kprobes: if it is not one of the exporter's, its events are not the exporter's loss).{{ end }}" % [c.lostWindow, c.lostWindow],
          ),
          alert(
            'ConntraceSeriesOverflow',
            'info',
            'conntrace_series{%(conntraceSelector)s} >= on (job, instance) conntrace_series_limit{%(conntraceSelector)s}' % c,
            c.seriesOverflowFor,
            'The exporter is folding new peers into its overflow series.',
            'conntrace_exporter on {{ $labels.instance }} holds {{ $value | humanize }} label sets for this Prometheus, its --collector.max-series: new peers are counted under labels "overflow" instead of their own.',
          ),
          alert(
            'ConntraceExporterDown',
            'critical',
            'up{%(conntraceSelector)s} == 0' % c,
            c.downFor,
            'The exporter cannot be scraped.',
            'Prometheus could not scrape conntrace_exporter on {{ $labels.instance }} for %s: no connection metrics from that host.' % c.downFor,
          ),
          alert(
            'ConntraceExporterNoData',
            'warning',
            |||
              up{%(conntraceSelector)s} == 1
              unless on (job, instance)
              conntrace_tracked_connections{%(conntraceSelector)s} > 0
            ||| % c,
            c.noDataFor,
            'The exporter is scraped but traces nothing.',
            'conntrace_exporter on {{ $labels.instance }} answers scrapes but tracks no connection, not even the scrape itself: its probes are not attached, or the filters exclude everything.',
          ),
        ],
      },
    ],
  },
}
