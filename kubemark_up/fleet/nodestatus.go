package main

// A hollow node's status: what the kubelet's setters compute, and when it is patched
// (tryUpdateNodeStatus: on a change, a new podCIDR, or every statusReportEvery).

import (
	"context"
	"fmt"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	nodeutil "k8s.io/component-helpers/node/util"
)

func (n *HollowNode) capacity() v1.ResourceList {
	return v1.ResourceList{
		v1.ResourceCPU:              resource.MustParse("4"),
		v1.ResourceMemory:           resource.MustParse("15Gi"),
		v1.ResourcePods:             *resource.NewQuantity(int64(n.fleet.config.MaxPods), resource.DecimalSI),
		v1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
		"hugepages-1Gi":             resource.MustParse("0"),
		"hugepages-2Mi":             resource.MustParse("0"),
	}
}

func (n *HollowNode) since(kind, status string, now metav1.Time) metav1.Time {
	key := kind + "=" + status
	if t, ok := n.transitions[key]; ok {
		return t
	}
	n.transitions[key] = now
	return now
}

// status is what the kubelet's setters compute (pkg/kubelet/nodestatus): capacity,
// conditions, addresses, daemon endpoints, node info.
func (n *HollowNode) status(now metav1.Time) v1.NodeStatus {
	readyStatus, readyReason, readyMessage := v1.ConditionFalse, "KubeletNotReady", "container runtime status check may not have completed yet"
	if n.ready {
		readyStatus, readyReason, readyMessage = v1.ConditionTrue, "KubeletReady", "kubelet is posting ready status"
	}
	condition := func(kind v1.NodeConditionType, status v1.ConditionStatus, reason, message string) v1.NodeCondition {
		return v1.NodeCondition{Type: kind, Status: status, Reason: reason, Message: message, LastHeartbeatTime: now,
			LastTransitionTime: n.since(string(kind), string(status), now)}
	}
	capacity := n.capacity()
	version := n.fleet.config.Version
	return v1.NodeStatus{
		Capacity:    capacity,
		Allocatable: capacity,
		Conditions: []v1.NodeCondition{
			condition(v1.NodeMemoryPressure, v1.ConditionFalse, "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
			condition(v1.NodeDiskPressure, v1.ConditionFalse, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
			condition(v1.NodePIDPressure, v1.ConditionFalse, "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
			condition(v1.NodeReady, readyStatus, readyReason, readyMessage),
		},
		Addresses: []v1.NodeAddress{
			{Type: v1.NodeInternalIP, Address: n.conf.Address},
			{Type: v1.NodeHostName, Address: n.name()},
		},
		DaemonEndpoints: v1.NodeDaemonEndpoints{KubeletEndpoint: v1.DaemonEndpoint{Port: 10250}},
		NodeInfo: v1.NodeSystemInfo{
			MachineID: n.name(), SystemUUID: n.name(), BootID: n.name(), KernelVersion: "6.1.0",
			OSImage: "kubemark-up fleet", ContainerRuntimeVersion: "fake://1.0.0", KubeletVersion: version,
			OperatingSystem: "linux", Architecture: "amd64",
		},
		RuntimeHandlers: []v1.NodeRuntimeHandler{{Name: "", Features: &v1.NodeRuntimeHandlerFeatures{}}},
	}
}

// nodeStatusUpdateRetry: the kubelet's attempts per tick (updateNodeStatus), one
// after the other, before it gives up until the next tick.
const nodeStatusUpdateRetry = 5

// syncStatus is one tick of the kubelet's updateNodeStatus: tryStatus up to
// nodeStatusUpdateRetry times until one succeeds, each failure logged as the kubelet
// logs it.
func (n *HollowNode) syncStatus(ctx context.Context) {
	n.statusMu.Lock()
	defer n.statusMu.Unlock()
	for try := range nodeStatusUpdateRetry {
		err := n.tryStatus(ctx, try)
		if err == nil || ctx.Err() != nil {
			return
		}
		n.fleet.counters.errorS(err, "Error updating node status, will retry", "node", n.name(), "try", try+1)
	}
	n.fleet.counters.errorS(nil, "Unable to update node status: update node status exceeds retry count", "node", n.name())
}

// tryStatus is tryUpdateNodeStatus: the base Node from the lister on the first try
// (no request), from a GET on the heartbeat client on the others; the status
// computed; a PATCH only if it changed (heartbeat times aside), the podCIDR changed, or
// 5 minutes passed since the last report.
func (n *HollowNode) tryStatus(ctx context.Context, try int) error {
	base := n.self.Load()
	if try > 0 || base == nil {
		var err error
		if base, err = n.heartbeat.CoreV1().Nodes().Get(ctx, n.name(), metav1.GetOptions{}); err != nil {
			return fmt.Errorf("error getting node %q: %w", n.name(), err)
		}
	}
	now := metav1.Now()
	wasReady := n.lastReported != nil && readyOf(n.lastReported)
	status := n.status(now)
	if !mustReport(n.lastReported, n.lastPodCIDR, n.reportedAt, base.Spec.PodCIDR, &status, time.Now()) {
		return nil
	}
	updated := base.DeepCopy()
	updated.Status = mergeStatus(base.Status, status)
	if _, _, err := nodeutil.PatchNodeStatus(n.heartbeat.CoreV1(), types.NodeName(n.name()), base, updated); err != nil {
		return err
	}
	n.lastReported, n.lastPodCIDR, n.reportedAt = &status, base.Spec.PodCIDR, time.Now()
	if !wasReady && readyOf(&status) {
		n.event(n.nodeRef(), v1.EventTypeNormal, "NodeReady", "Node %s status is now: NodeReady", n.name())
	}
	return nil
}

// mustReport is syncStatus's choice: PATCH the status when none was reported yet, the
// podCIDR changed, the status changed (heartbeat times aside), or statusReportEvery has
// passed since the last report.
func mustReport(last *v1.NodeStatus, lastPodCIDR string, reportedAt time.Time, podCIDR string, status *v1.NodeStatus,
	now time.Time) bool {
	return last == nil || podCIDR != lastPodCIDR || statusChanged(last, status) || now.Sub(reportedAt) >= statusReportEvery
}

// mergeStatus keeps the conditions others own (node-problem-detector's) beside the
// kubelet's, as the kubelet's setters update only their own.
func mergeStatus(old, mine v1.NodeStatus) v1.NodeStatus {
	own := map[v1.NodeConditionType]bool{}
	for _, c := range mine.Conditions {
		own[c.Type] = true
	}
	for _, c := range old.Conditions {
		if !own[c.Type] {
			mine.Conditions = append(mine.Conditions, c)
		}
	}
	return mine
}

func readyOf(s *v1.NodeStatus) bool {
	for _, c := range s.Conditions {
		if c.Type == v1.NodeReady {
			return c.Status == v1.ConditionTrue
		}
	}
	return false
}

// statusChanged compares as the kubelet's nodeStatusHasChanged does: conditions by
// type, status, reason, message and transition time; the rest of the status as is.
func statusChanged(a, b *v1.NodeStatus) bool {
	if len(a.Conditions) != len(b.Conditions) {
		return true
	}
	for i := range a.Conditions {
		x, y := a.Conditions[i], b.Conditions[i]
		if x.Type != y.Type || x.Status != y.Status || x.Reason != y.Reason || x.Message != y.Message ||
			!x.LastTransitionTime.Equal(&y.LastTransitionTime) {
			return true
		}
	}
	return len(a.Addresses) != len(b.Addresses) || a.Addresses[0] != b.Addresses[0] ||
		a.NodeInfo != b.NodeInfo || !a.Capacity.Pods().Equal(*b.Capacity.Pods())
}
