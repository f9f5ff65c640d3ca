package main

// The pod lifecycle's timing model: how long a kubelet takes from seeing a pod bound
// to it to reporting it Running, and when a batch pod ends.
//
// A kubelet's pod worker creates the sandbox (CNI, the pause container), finds the
// images present and starts the containers; the PLEG, relisting the runtime every
// second, then sees them running and the status manager reports Running. The fleet
// waits out the same steps: the containers start at (start - the mean PLEG wait), and
// Running follows after a PLEG wait drawn from [0, min(1 s, 2 x start)), so that the
// time from bound to Running averages PodStartSeconds.

import (
	"math/rand/v2"
	"strconv"
	"time"

	v1 "k8s.io/api/core/v1"
)

const (
	plegRelistPeriod = time.Second // the kubelet's generic PLEG relist period
	// defaultPodStart is the bound-to-Running time when the config does not say: the
	// median a real kubelet took for the fidelity reference's pause pod (reference.yaml).
	defaultPodStart = 550 * time.Millisecond
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

// lifePlan is one pod's timing: when its containers start after it is seen, and the
// PLEG's wait after that before Running is reported.
type lifePlan struct {
	containers, pleg time.Duration
}

func (c PodLife) start() time.Duration {
	if c.PodStartSeconds == nil {
		return defaultPodStart
	}
	return time.Duration(max(0, *c.PodStartSeconds) * float64(time.Second))
}

// plan draws one pod's timing; rnd is a number in [0, 1).
func (c PodLife) plan(rnd float64) lifePlan {
	start := c.start()
	if start <= 0 {
		return lifePlan{}
	}
	relist := min(plegRelistPeriod, 2*start)
	return lifePlan{containers: start - relist/2, pleg: time.Duration(rnd * float64(relist))}
}

func (c PodLife) drawPlan() lifePlan { return c.plan(rand.Float64()) }

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
