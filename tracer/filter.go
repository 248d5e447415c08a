package tracer

// ConnectionFilters selects the connections traced. (Being written.)
type ConnectionFilters struct{}
