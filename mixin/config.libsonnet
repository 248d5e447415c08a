// Settings a user overrides: (import 'mixin.libsonnet') + { _config+:: { ... } }.
{
  _config+:: {
    // Selects conntrace_exporter's series (the scrape job).
    conntraceSelector: 'job="conntrace"',

    // The window of every rate in the recording rules (their names end in
    // :rate5m, so change both together).
    rateInterval: '5m',

    // ConntraceHighRetransmitRatio: retransmitted / sent TCP data segments
    // to one peer, above this while at least retransmitMinSegmentsPerSecond
    // segments a second go to it.
    retransmitRatioThreshold: 0.05,
    retransmitMinSegmentsPerSecond: 10,
    retransmitFor: '10m',

    // ConntraceRTTAboveUsual: mean RTT to a peer over rateInterval above
    // rttFactor times its mean over rttBaseline ending rttBaselineOffset
    // ago (so that the anomaly is not its own baseline), and above
    // rttMinSeconds (sub-millisecond peers jitter by large factors
    // without harm).
    rttFactor: 3,
    rttBaseline: '1d',
    rttBaselineOffset: '1h',
    rttMinSeconds: 0.005,
    rttMinSamplesPerSecond: 1,
    rttFor: '15m',

    // ConntraceConnectionFailuresRising: failed / attempted TCP connects
    // to a peer above this, at least connectionFailuresMinPerSecond.
    connectionFailureRatioThreshold: 0.1,
    connectionFailuresMinPerSecond: 0.05,
    connectionFailuresFor: '10m',

    // ConntraceHandshakeAboveUsual: mean TCP handshake time with a peer
    // over rateInterval above handshakeFactor times its mean over
    // handshakeBaseline ending handshakeBaselineOffset ago, above
    // handshakeMinSeconds (a lost SYN or SYN-ACK alone adds a second),
    // with at least handshakeMinPerSecond handshakes a second.
    handshakeFactor: 3,
    handshakeBaseline: '1d',
    handshakeBaselineOffset: '1h',
    handshakeMinSeconds: 0.05,
    handshakeMinPerSecond: 0.1,
    handshakeFor: '15m',

    // ConntraceListenerDropping: a listening port dropping more than
    // listenDropsMinPerSecond packets a second, its accept queue seen full
    // within listenQueueWindow, for listenDropsFor.
    listenDropsMinPerSecond: 0,
    listenQueueWindow: '10m',
    listenDropsFor: '5m',

    // ConntraceRetransmitTimeoutsDominate: retransmission timeouts over
    // timeouts and fast recoveries with a peer above timeoutShareThreshold,
    // at least timeoutsMinPerSecond timeouts a second.
    timeoutShareThreshold: 0.5,
    timeoutsMinPerSecond: 0.1,
    timeoutsFor: '15m',

    // ConntraceZeroWindowStall: sending to a peer spends more than
    // rwndLimitedShareThreshold of its time (at least
    // zeroWindowMinBusySeconds a second) waiting on the peer's receive
    // window, with connections stalled on a zero window, for
    // zeroWindowFor.
    rwndLimitedShareThreshold: 0.9,
    zeroWindowMinBusySeconds: 0.1,
    zeroWindowFor: '10m',

    // ConntraceConnectionsAborted: TCP connections aborted (reset by the
    // peer, timed out) with one reason / TCP connections closed, with a
    // peer, above this, at least connectionAbortsMinPerSecond.
    connectionAbortRatioThreshold: 0.1,
    connectionAbortsMinPerSecond: 0.05,
    connectionAbortsFor: '10m',

    // ConntraceLosingData and ConntraceBPFProgramMisses: anything lost in
    // the last lostWindow, for lostFor (ConntraceLosingData) or missesFor
    // (ConntraceBPFProgramMisses); the window is longer than the waits, so
    // that a single burst fires.
    lostWindow: '15m',
    lostFor: '5m',

    // ConntraceTrackedConnectionsNearLimit: tracked TCP connections, or
    // UDP flows, over their limit (each has its own) above this.
    trackedRatioThreshold: 0.9,
    trackedFor: '15m',

    // ConntraceBPFProgramMisses.
    missesFor: '5m',

    // ConntraceSeriesOverflow: a client's label sets reached --collector.max-series.
    seriesOverflowFor: '15m',

    // ConntraceExporterDown, ConntraceExporterNoData.
    downFor: '5m',
    noDataFor: '10m',

    // The per-workload view (instance_workload:* rules, Workloads
    // dashboard): the labels that name a workload on an instance (job,
    // instance). They come with --collector.labels (cgroup, unit,
    // container_id, pod_uid); without them each instance is one workload,
    // its workload labels empty.
    workloadLabels: ['cgroup', 'unit', 'container_id', 'pod_uid'],
    // How many workloads the Workloads dashboard's top panels show.
    workloadTopK: 10,

    // Dashboards.
    dashboardNamePrefix: 'conntrace / ',
    dashboardTags: ['conntrace'],
    dashboardRefresh: '30s',
    dashboardTimezone: 'utc',
  },
}
