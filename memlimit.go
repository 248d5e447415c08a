package main

import (
	"errors"
	"math"
	"os"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
)

// setMemoryLimit sets GOMEMLIMIT to ratio of the cgroup's memory limit,
// unless the environment sets GOMEMLIMIT. The heap at a scrape is about
// half of the exporter's RSS (the collector's headroom, GOGC=100): near a
// container's limit, the soft limit makes the garbage collector run
// sooner instead of the kernel killing the process (BENCHMARKS.md §13).
func setMemoryLimit(logger log.Logger, ratio float64) {
	if v := os.Getenv("GOMEMLIMIT"); v != "" {
		level.Info(logger).Log("msg", "GOMEMLIMIT set by the environment: --auto-gomemlimit leaves it", "GOMEMLIMIT", v)
		return
	}
	// automemlimit reads AUTOMEMLIMIT itself: "off", or a ratio that
	// overrides the flag's.
	if v, ok := os.LookupEnv("AUTOMEMLIMIT"); ok {
		if v == "off" {
			level.Info(logger).Log("msg", "AUTOMEMLIMIT=off in the environment: GOMEMLIMIT not set")
			return
		}
		level.Info(logger).Log("msg", "AUTOMEMLIMIT in the environment overrides --auto-gomemlimit.ratio", "AUTOMEMLIMIT", v)
	}
	limit, err := memlimit.Set(memlimit.WithRatio(ratio), memlimit.WithProvider(memlimit.FromCgroup))
	switch {
	case errors.Is(err, memlimit.ErrNoCgroup):
		level.Info(logger).Log("msg", "No cgroup memory limit found: GOMEMLIMIT not set", "err", err)
	case err != nil:
		level.Warn(logger).Log("msg", "Cannot read the cgroup memory limit: GOMEMLIMIT not set", "err", err)
	case limit == math.MaxInt64:
		level.Info(logger).Log("msg", "The cgroup sets no memory limit: GOMEMLIMIT not set")
	default:
		level.Info(logger).Log("msg", "GOMEMLIMIT set from the cgroup memory limit", "GOMEMLIMIT", limit, "ratio", ratio)
	}
}
