// Small builders for Grafana dashboards in plain jsonnet (grafonnet cannot
// be fetched here). Panels are laid out two to a row and numbered in order.
{
  datasource:: { type: 'prometheus', uid: '${datasource}' },

  target(expr, legend='', format='time_series'):: {
    datasource: $.datasource,
    expr: expr,
    legendFormat: legend,
    format: format,
    refId: '',  // set by panel()
  },

  local panel(type, title, description, targets, fieldDefaults, options) = {
    type: type,
    title: title,
    description: description,
    datasource: $.datasource,
    targets: [
      targets[i] { refId: std.char(std.codepoint('A') + i) }
      for i in std.range(0, std.length(targets) - 1)
    ],
    fieldConfig: { defaults: fieldDefaults, overrides: [] },
    options: options,
  },

  local legend = { displayMode: 'list', placement: 'bottom', showLegend: true, calcs: [] },
  local tooltip = { mode: 'multi', sort: 'desc' },

  timeseries(title, description, unit, targets, stack=false):: panel(
    'timeseries',
    title,
    description,
    targets,
    {
      unit: unit,
      custom: { drawStyle: 'line', lineWidth: 1, fillOpacity: if stack then 30 else 10, stacking: { mode: if stack then 'normal' else 'none', group: 'A' } },
    },
    { legend: legend, tooltip: tooltip },
  ),

  heatmap(title, description, targets):: panel(
    'heatmap',
    title,
    description,
    targets,
    { unit: 's' },
    {
      calculate: false,
      yAxis: { unit: 's', axisPlacement: 'left' },
      cellGap: 1,
      color: { mode: 'scheme', scheme: 'Oranges', fill: 'dark-orange', scale: 'exponential', exponent: 0.5, steps: 64, reverse: false },
      rowsFrame: { layout: 'auto' },
      tooltip: { mode: 'single', yHistogram: true, showColorScale: false },
      legend: { show: true },
      exemplars: { color: 'rgba(255,0,255,0.7)' },
      filterValues: { le: 1e-9 },
      showValue: 'auto',
    },
  ),

  stat(title, description, unit, targets):: panel(
    'stat',
    title,
    description,
    targets,
    { unit: unit },
    {
      reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false },
      colorMode: 'value',
      graphMode: 'none',
      justifyMode: 'auto',
      orientation: 'auto',
      textMode: 'auto',
      wideLayout: true,
      showPercentChange: false,
      percentChangeColorMode: 'standard',
    },
  ),

  // table shows instant queries. To show several as the columns of one
  // table, give transformations (merge, organize), overrides (a unit per
  // column) and sortBy.
  table(title, description, targets, transformations=[], overrides=[], sortBy=[])::
    local options = { showHeader: true, cellHeight: 'sm', frameIndex: 0, footer: { show: false, reducer: ['sum'], countRows: false } };
    panel(
      'table',
      title,
      description,
      [t { format: 'table', instant: true } for t in targets],
      { unit: 'none' },
      options + (if std.length(sortBy) > 0 then { sortBy: sortBy } else {}),
    ) + {
      fieldConfig+: { overrides: overrides },
      [if std.length(transformations) > 0 then 'transformations']: transformations,
    },

  datasourceVariable:: {
    name: 'datasource',
    label: 'Data source',
    type: 'datasource',
    query: 'prometheus',
    current: { text: '', value: '' },
    hide: 0,
    refresh: 1,
    regex: '',
    skipUrlSync: false,
  },

  queryVariable(name, label, query, multi=false):: {
    name: name,
    label: label,
    type: 'query',
    datasource: $.datasource,
    query: { query: query, refId: 'PrometheusVariableQueryEditor-VariableQuery', qryType: 1 },
    definition: query,
    current: { text: '', value: '' },
    hide: 0,
    refresh: 2,  // on time range change
    regex: '',
    sort: 1,
    multi: multi,
    includeAll: multi,
    allValue: if multi then '.+' else null,
    skipUrlSync: false,
  },

  // dashboard lays the panels out two to a row (full width when alone
  // in the last row) and numbers them.
  dashboard(config, file, title, description, variables, panels):: {
    uid: std.md5(file),
    title: config.dashboardNamePrefix + title,
    description: description,
    tags: config.dashboardTags,
    timezone: config.dashboardTimezone,
    refresh: config.dashboardRefresh,
    editable: true,
    graphTooltip: 1,
    schemaVersion: 39,
    version: 1,
    time: { from: 'now-1h', to: 'now' },
    timepicker: {},
    fiscalYearStartMonth: 0,
    liveNow: false,
    links: [],
    annotations: { list: [] },
    templating: { list: [$.datasourceVariable] + variables },
    panels: [
      panels[i] {
        id: i + 1,
        gridPos: {
          local alone = i == std.length(panels) - 1 && i % 2 == 0,
          x: if i % 2 == 0 then 0 else 12,
          y: std.floor(i / 2) * 8,
          w: if alone then 24 else 12,
          h: 8,
        },
      }
      for i in std.range(0, std.length(panels) - 1)
    ],
  },
}
