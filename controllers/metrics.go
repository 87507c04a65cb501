package controllers

import (
	"github.com/prometheus/client_golang/prometheus"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

// fenceDuration observes how long a fence takes, from the reconcile that
// first saw isolation.mode Fenced to the status reporting Fenced=True.
var fenceDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
	Name:    "careplane_fence_duration_seconds",
	Help:    "Time from observing isolation.mode Fenced to reporting Fenced=True.",
	Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60},
})

// fenceStepsDelayed counts the times a fence's steps after its deny policy
// waited for a fleet fence to finish arriving (fleetfence.go).
var fenceStepsDelayed = prometheus.NewCounter(prometheus.CounterOpts{
	Name: "careplane_fence_steps_held_total",
	Help: "Times a fence's steps after its deny policy waited while a fleet fence was arriving.",
})

func init() {
	ctrlmetrics.Registry.MustRegister(fenceDuration, fenceStepsDelayed)
}

var (
	// failovers counts moves of traffic to the standby, by reason.
	failovers = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "careplane_failovers_total",
		Help: "Moves of an environment's traffic to its standby site, by reason.",
	}, []string{"reason"})
	// failoverDuration observes the time from the failover's trigger (the
	// fence, or the primary's outage reaching unavailableAfter) to the front
	// EndpointSlices pointing at the standby.
	failoverDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "careplane_failover_duration_seconds",
		Help:    "Time from a failover's trigger to traffic going to the standby.",
		Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120},
	})
)

func init() {
	ctrlmetrics.Registry.MustRegister(failovers, failoverDuration)
}
