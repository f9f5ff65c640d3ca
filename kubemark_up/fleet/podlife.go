package main

// The pod lifecycle's timing model: how long a kubelet takes from seeing a pod bound
// to it to reporting it Running, and when a batch pod ends.
//
// Measured on a real v1.36.3 kubelet with containerd (tests/unit/real_pod_lifecycle.json,
// the fidelity reference's lifecycle timing): the Pending status goes out at once; the
// sandbox is ready (its status patched, Pulled and Created) at about 85 % of the way to
// Running; Started and the Running status follow. Bound to Running had a median of
// 0.52 s and a p99 of 0.64 s (0.69 s measured again on a quiet machine, 2026-12-08):
// a narrow spread, no whole PLEG period in it. The fleet
// draws each pod's time from a normal distribution around PodStartSeconds with the
// measured relative spread ((p99 - p50) / p50 over the normal's 99th-percentile z).
// On deletion: the terminating status at once, the containers' terminated one about
// 0.12 s later, the status manager's last syncs and the DELETE about 0.64 s after
// that (0 PodStartSeconds: everything at once).

import (
	"math/rand/v2"
	"strconv"
	"time"

	v1 "k8s.io/api/core/v1"
)

const (
	// defaultPodStart is the bound-to-Running time when the config does not say: the
	// median a real kubelet took for the fidelity reference's pause pod (reference.yaml).
	defaultPodStart = 520 * time.Millisecond
	// startSpread is the measured relative spread of bound to Running (reference.yaml's
	// timing, 2026-12-08): (0.689 - 0.522) / 0.522 / 2.326, the normal distribution's
	// standard deviation over its mean.
	startSpread  = 0.1375
	sandboxShare = 0.85 // of the way to Running, when the sandbox's status goes out
	resyncJitter = 0.5
	// The measured deletion steps, at the default pace: the containers stopped after
	// the terminating status, the status manager's last syncs after that.
	defaultKill     = 120 * time.Millisecond
	defaultTeardown = 640 * time.Millisecond
	// The annotations a pod can carry to end (restartPolicy Never or OnFailure only).
	lifetimeAnnotation = "kubemark-up.io/lifetime-seconds"
	exitCodeAnnotation = "kubemark-up.io/exit-code"
)

// PodLife is the part of the fleet's config that paces its pods.
type PodLife struct {
	// Seconds from a pod bound to its Running status, on average (0: at once).
	PodStartSeconds *float64 `json:"pod_start_seconds"`
	// Seconds a pod with restartPolicy Never or OnFailure runs before it ends, when it
	// carries no lifetime annotation (0: it runs until deleted).
	PodLifetimeSeconds float64 `json:"pod_lifetime_seconds"`
}

// lifePlan is one pod's timing: when its sandbox is ready after it is seen, and when
// its containers are reported running after that.
type lifePlan struct {
	sandbox, containers time.Duration
}

func (c PodLife) start() time.Duration {
	if c.PodStartSeconds == nil {
		return defaultPodStart
	}
	return time.Duration(max(0, *c.PodStartSeconds) * float64(time.Second))
}

// plan is one pod's timing for z, a standard normal draw (clamped to 5 standard
// deviations, so that no pod is instant or stuck).
func (c PodLife) plan(z float64) lifePlan {
	start := c.start()
	if start <= 0 {
		return lifePlan{}
	}
	total := time.Duration(float64(start) * (1 + startSpread*max(-5, min(5, z))))
	sandbox := time.Duration(sandboxShare * float64(total))
	return lifePlan{sandbox: sandbox, containers: total - sandbox}
}

func (c PodLife) drawPlan() lifePlan { return c.plan(rand.NormFloat64()) }

// resyncPeriod is the kubelet's syncFrequency (a variable for the tests' sake).
var resyncPeriod = time.Minute

// resync is when the pod worker syncs a running pod again: its resync period (the
// kubelet's syncFrequency, 1 minute) with the worker's jitter of half of it.
func (c PodLife) resync() time.Duration {
	return resyncPeriod + time.Duration(rand.Float64()*resyncJitter*float64(resyncPeriod))
}

// stopping is a deletion's pace: from the terminating status to the containers'
// terminated one, and from that to the status manager's last syncs and the DELETE; as
// measured, whatever the start's mean, but none for instant pods.
func (c PodLife) stopping() (kill, teardown time.Duration) {
	if c.start() <= 0 {
		return 0, 0
	}
	return defaultKill, defaultTeardown
}

// ending is how a pod ends by itself: after lifetime, its containers exiting with
// exitCode. ok false: it runs until deleted (restartPolicy Always, or no lifetime).
func (c PodLife) ending(pod *v1.Pod) (lifetime time.Duration, exitCode int32, ok bool) {
	if pod.Spec.RestartPolicy == v1.RestartPolicyAlways || pod.Spec.RestartPolicy == "" {
		return 0, 0, false
	}
	seconds := c.PodLifetimeSeconds
	if s, found := pod.Annotations[lifetimeAnnotation]; found {
		parsed, err := strconv.ParseFloat(s, 64)
		if err != nil || parsed < 0 {
			return 0, 0, false
		}
		seconds = parsed
	}
	if seconds <= 0 {
		return 0, 0, false
	}
	if s, found := pod.Annotations[exitCodeAnnotation]; found {
		code, err := strconv.ParseInt(s, 10, 32)
		if err == nil {
			exitCode = int32(code)
		}
	}
	if exitCode != 0 && pod.Spec.RestartPolicy == v1.RestartPolicyOnFailure {
		return 0, 0, false // the kubelet would restart the container: it does not end (restarts are not modelled)
	}
	return time.Duration(seconds * float64(time.Second)), exitCode, true
}

// endPhase is the phase a pod whose containers exited with exitCode ends in.
func endPhase(exitCode int32) v1.PodPhase {
	if exitCode == 0 {
		return v1.PodSucceeded
	}
	return v1.PodFailed
}

// sleep waits d, or until done closes; false when done closed first.
func sleep(done <-chan struct{}, d time.Duration) bool {
	if d <= 0 {
		select {
		case <-done:
			return false
		default:
			return true
		}
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-done:
		return false
	case <-timer.C:
		return true
	}
}
