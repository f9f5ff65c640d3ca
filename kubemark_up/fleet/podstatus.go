package main

// A pod's status as a v1.36.3 kubelet writes it at each step, field by field as a real
// one was seen to (tests/unit/real_pod_statuses.json: a pod watch over a real
// kubelet's pause pods, containerd, cgroup v1): the status's and each condition's
// observedGeneration, each container's volume mounts from the first status on, its
// resources once its container exists, and the pod-level resources, which the
// kubelet reads from the pod's cgroup once the pod it syncs is Running in the API
// (so from its first resync on, 60-90 s after Running; pods.go sends that sync).

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	resourcehelper "k8s.io/component-helpers/resource"
	"k8s.io/utils/ptr"
)

// The cgroup arithmetic the kubelet's container manager uses (pkg/kubelet/cm at
// v1.36.3): CPU shares per CPU and their bounds, the CFS period and least quota, the
// least CPU limit it reports, and what an unlimited memory cgroup (v1) reads as.
const (
	sharesPerCPU     = 1024
	minShares        = 2
	maxShares        = 262144
	cfsPeriod        = 100000 // µs
	minCFSQuota      = 1000   // µs
	minMilliCPULimit = 10
	unlimitedMemory  = int64(9223372036854771712) // PAGE_COUNTER_MAX pages of 4 KiB: "9007199254740988Ki"
)

// status is the status the kubelet's generateAPIPodStatus makes for the pod at its
// step (state's lock held); current is the pod as the status manager's GET read it.
func (t *podTable) status(current *v1.Pod, state *podState, now metav1.Time) v1.PodStatus {
	n := t.node
	generation := current.Generation
	sandbox := !state.sandbox.IsZero() && state.step >= stepSandbox && state.step <= stepTerminating
	// Measured: a deleted pod's status stays ready, its containers running, until they
	// have stopped; the terminating write changes only observedGeneration.
	running := state.step == stepRunning || state.step == stepTerminating
	ended := state.step == stepEnded || state.step == stepKilled
	condition := func(kind v1.PodConditionType, ok bool, since metav1.Time, reason string) v1.PodCondition {
		c := v1.PodCondition{Type: kind, Status: v1.ConditionFalse, LastTransitionTime: since, Reason: reason,
			ObservedGeneration: generation}
		if ok {
			c.Status, c.Reason = v1.ConditionTrue, ""
		}
		if since.IsZero() {
			c.LastTransitionTime = state.started
		}
		return c
	}
	notReady := "ContainersNotReady"
	if ended {
		notReady = "PodCompleted"
	}
	readySince := state.started
	switch {
	case running:
		readySince = now
		if cond := findCondition(current.Status.Conditions, v1.PodReady); cond != nil && cond.Status == v1.ConditionTrue {
			readySince = cond.LastTransitionTime
		}
	case !state.finished.IsZero():
		readySince = state.finished
	case !state.stopping.IsZero():
		readySince = state.stopping
	}
	initialized := condition(v1.PodInitialized, true, state.started, "")
	ready := condition(v1.PodReady, running, readySince, notReady)
	containersReady := condition(v1.ContainersReady, running, readySince, notReady)
	if ended {
		initialized.Reason = notReady
	} else if !running {
		names := make([]string, 0, len(current.Spec.Containers))
		for _, c := range current.Spec.Containers {
			names = append(names, c.Name)
		}
		ready.Message = fmt.Sprintf("containers with unready status: [%s]", strings.Join(names, " "))
		containersReady.Message = ready.Message
	}
	status := v1.PodStatus{
		ObservedGeneration: generation,
		Phase:              v1.PodPending,
		HostIP:             n.conf.Address,
		HostIPs:            []v1.HostIP{{IP: n.conf.Address}},
		StartTime:          &state.started,
		QOSClass:           current.Status.QOSClass,
		Conditions: []v1.PodCondition{
			condition(v1.PodReadyToStartContainers, sandbox, state.sandbox, ""),
			initialized, ready, containersReady,
			condition(v1.PodScheduled, true, state.started, ""),
		},
		Resources:          podResources(current),
		AllocatedResources: podRequests(current),
	}
	if !sandbox && !state.finished.IsZero() {
		status.Conditions[0].LastTransitionTime = state.finished
	}
	switch {
	case running:
		status.Phase = v1.PodRunning
	case ended:
		// The pause container exits 0 on SIGTERM; a batch pod with its exit code.
		status.Phase = endPhase(state.exitCode)
	}
	// Measured: the sandbox-ready status has no IP yet; the Running one brings it.
	if state.ip != nil && state.step >= stepRunning {
		status.PodIP, status.PodIPs = state.ip.String(), []v1.PodIP{{IP: state.ip.String()}}
	}
	for _, c := range current.Spec.Containers {
		cs := v1.ContainerStatus{Name: c.Name, Image: c.Image, Ready: running, Started: ptr.To(running),
			VolumeMounts: volumeMounts(c)}
		switch {
		case running:
			cs.State.Running = &v1.ContainerStateRunning{StartedAt: state.sandbox}
		case ended:
			reason := "Completed"
			if state.exitCode != 0 {
				reason = "Error"
			}
			started := state.sandbox
			if started.IsZero() { // deleted before its containers started
				started = state.finished
			}
			cs.State.Terminated = &v1.ContainerStateTerminated{ExitCode: state.exitCode, Reason: reason,
				StartedAt: started, FinishedAt: state.finished, ContainerID: containerID(current, c.Name)}
		default:
			cs.State.Waiting = &v1.ContainerStateWaiting{Reason: "ContainerCreating"}
		}
		if running || ended { // the container exists: the runtime's view of it
			cs.ContainerID, cs.ImageID = containerID(current, c.Name), imageID(c.Image)
			cs.Resources, cs.AllocatedResources = c.Resources.DeepCopy(), c.Resources.Requests
		}
		status.ContainerStatuses = append(status.ContainerStatuses, cs)
	}
	return status
}

// volumeMounts is a container's mounts as its status reports them: a read-only one
// without recursive read-only (containerd 1.6 has none) says so.
func volumeMounts(c v1.Container) []v1.VolumeMountStatus {
	var mounts []v1.VolumeMountStatus
	for _, m := range c.VolumeMounts {
		status := v1.VolumeMountStatus{Name: m.Name, MountPath: m.MountPath, ReadOnly: m.ReadOnly}
		if m.ReadOnly {
			status.RecursiveReadOnly = ptr.To(v1.RecursiveReadOnlyDisabled)
			if m.RecursiveReadOnly != nil && *m.RecursiveReadOnly == v1.RecursiveReadOnlyEnabled {
				status.RecursiveReadOnly = ptr.To(v1.RecursiveReadOnlyEnabled)
			}
		}
		mounts = append(mounts, status)
	}
	return mounts
}

func podRequests(pod *v1.Pod) v1.ResourceList {
	return resourcehelper.PodRequests(pod, resourcehelper.PodResourcesOptions{})
}

// podResources is the pod-level resources the kubelet reports: what the pod asks for
// until the pod it syncs is Running in the API, then what the pod's cgroup holds
// (CPU request through shares, CPU limit through the CFS quota, the memory limit,
// unlimited unless every container has one); a terminal pod's stay as written.
func podResources(pod *v1.Pod) *v1.ResourceRequirements {
	requests, limits := podRequests(pod), resourcehelper.PodLimits(pod, resourcehelper.PodResourcesOptions{})
	switch pod.Status.Phase {
	case v1.PodSucceeded, v1.PodFailed:
		return pod.Status.Resources
	case v1.PodRunning:
	default:
		return &v1.ResourceRequirements{Requests: requests, Limits: limits}
	}
	resources := &v1.ResourceRequirements{Requests: v1.ResourceList{}, Limits: v1.ResourceList{}}
	if pod.Spec.Resources != nil {
		resources = pod.Spec.Resources.DeepCopy()
		resources.Requests, resources.Limits = orEmpty(resources.Requests), orEmpty(resources.Limits)
	}
	if milli := sharesToMilliCPU(milliCPUToShares(requests.Cpu().MilliValue())); milli > minShares ||
		resources.Requests.Cpu().MilliValue() > minShares {
		resources.Requests[v1.ResourceCPU] = *resource.NewMilliQuantity(milli, resource.DecimalSI)
	}
	if _, set := resources.Requests[v1.ResourceMemory]; !set {
		if memory, ok := requests[v1.ResourceMemory]; ok {
			resources.Requests[v1.ResourceMemory] = memory
		}
	}
	if limitedByAll(pod, v1.ResourceCPU) {
		quota := max(minCFSQuota, limits.Cpu().MilliValue()*cfsPeriod/1000)
		if milli := quota * 1000 / cfsPeriod; milli > minMilliCPULimit || resources.Limits.Cpu().MilliValue() > minMilliCPULimit {
			resources.Limits[v1.ResourceCPU] = *resource.NewMilliQuantity(milli, resource.DecimalSI)
		}
	}
	memory := unlimitedMemory
	if limitedByAll(pod, v1.ResourceMemory) {
		memory = limits.Memory().Value()
	}
	resources.Limits[v1.ResourceMemory] = *resource.NewQuantity(memory, resource.BinarySI)
	return resources
}

// limitedByAll: each of the pod's containers has a limit of name (the pod's cgroup is limited).
func limitedByAll(pod *v1.Pod, name v1.ResourceName) bool {
	for _, c := range pod.Spec.Containers {
		if _, ok := c.Resources.Limits[name]; !ok {
			return false
		}
	}
	return len(pod.Spec.Containers) > 0
}

func orEmpty(list v1.ResourceList) v1.ResourceList {
	if list == nil {
		return v1.ResourceList{}
	}
	return list
}

func milliCPUToShares(milli int64) int64 {
	return min(maxShares, max(minShares, milli*sharesPerCPU/1000))
}

func sharesToMilliCPU(shares int64) int64 {
	return (shares*1000 + sharesPerCPU - 1) / sharesPerCPU // rounded up
}

func findCondition(conditions []v1.PodCondition, kind v1.PodConditionType) *v1.PodCondition {
	for i := range conditions {
		if conditions[i].Type == kind {
			return &conditions[i]
		}
	}
	return nil
}

// containerID is a container's runtime ID, shaped as containerd's (64 hex digits).
func containerID(pod *v1.Pod, name string) string {
	sum := sha256.Sum256([]byte(string(pod.UID) + "/" + name))
	return "containerd://" + hex.EncodeToString(sum[:])
}

// imageID is an image's digest reference as containerd reports it: the repository
// with a sha256 digest (here the name's own, as no image is pulled).
func imageID(image string) string {
	repository := image
	if at := strings.LastIndex(repository, "@"); at >= 0 {
		return image
	}
	if colon := strings.LastIndex(repository, ":"); colon > strings.LastIndex(repository, "/") {
		repository = repository[:colon]
	}
	sum := sha256.Sum256([]byte(image))
	return repository + "@sha256:" + hex.EncodeToString(sum[:])
}
