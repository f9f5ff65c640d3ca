package main

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func testNode() *HollowNode {
	return &HollowNode{fleet: &Fleet{config: Config{Version: "v1.36.3", MaxPods: 110}},
		conf: NodeConf{Name: "hollow-node-0", Address: "198.18.0.1"}, transitions: map[string]metav1.Time{}}
}

var t0 = metav1.NewTime(time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC))

func conditionOf(s *v1.NodeStatus, kind v1.NodeConditionType) *v1.NodeCondition {
	for i := range s.Conditions {
		if s.Conditions[i].Type == kind {
			return &s.Conditions[i]
		}
	}
	return nil
}

func TestStatusChanged(t *testing.T) {
	cases := []struct {
		name   string
		change func(n *HollowNode, s *v1.NodeStatus) v1.NodeStatus
		want   bool
	}{
		{"the same status 10 s later: heartbeat times only", func(n *HollowNode, _ *v1.NodeStatus) v1.NodeStatus {
			return n.status(metav1.NewTime(t0.Add(10 * time.Second)))
		}, false},
		{"the runtime came up: Ready", func(n *HollowNode, _ *v1.NodeStatus) v1.NodeStatus {
			n.ready = true
			return n.status(metav1.NewTime(t0.Add(10 * time.Second)))
		}, true},
		{"a condition's message", func(_ *HollowNode, s *v1.NodeStatus) v1.NodeStatus {
			conditionOf(s, v1.NodeDiskPressure).Message = "kubelet has disk pressure"
			return *s
		}, true},
		{"a condition's reason", func(_ *HollowNode, s *v1.NodeStatus) v1.NodeStatus {
			conditionOf(s, v1.NodeMemoryPressure).Reason = "KubeletHasInsufficientMemory"
			return *s
		}, true},
		{"a condition's transition time", func(_ *HollowNode, s *v1.NodeStatus) v1.NodeStatus {
			conditionOf(s, v1.NodePIDPressure).LastTransitionTime = metav1.NewTime(t0.Add(time.Minute))
			return *s
		}, true},
		{"a condition more", func(_ *HollowNode, s *v1.NodeStatus) v1.NodeStatus {
			s.Conditions = append(s.Conditions, v1.NodeCondition{Type: "KernelDeadlock", Status: v1.ConditionFalse})
			return *s
		}, true},
		{"the same conditions in another order", func(_ *HollowNode, s *v1.NodeStatus) v1.NodeStatus {
			s.Conditions[0], s.Conditions[1] = s.Conditions[1], s.Conditions[0]
			return *s
		}, true},
		{"the InternalIP", func(_ *HollowNode, s *v1.NodeStatus) v1.NodeStatus {
			s.Addresses[0].Address = "198.18.0.2"
			return *s
		}, true},
		{"an address more", func(_ *HollowNode, s *v1.NodeStatus) v1.NodeStatus {
			s.Addresses = append(s.Addresses, v1.NodeAddress{Type: v1.NodeExternalIP, Address: "203.0.113.1"})
			return *s
		}, true},
		{"the kubelet version", func(_ *HollowNode, s *v1.NodeStatus) v1.NodeStatus {
			s.NodeInfo.KubeletVersion = "v1.36.4"
			return *s
		}, true},
		{"max pods", func(_ *HollowNode, s *v1.NodeStatus) v1.NodeStatus {
			s.Capacity[v1.ResourcePods] = *resource.NewQuantity(250, resource.DecimalSI)
			return *s
		}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := testNode()
			before := n.status(t0)
			after := c.change(n, before.DeepCopy())
			if got := statusChanged(&before, &after); got != c.want {
				t.Fatalf("statusChanged = %v, want %v", got, c.want)
			}
		})
	}
}

func TestStatusKeepsTransitionTimes(t *testing.T) {
	n := testNode()
	first := n.status(t0)
	n.ready = true
	later := metav1.NewTime(t0.Add(time.Minute))
	second := n.status(later)
	cases := []struct {
		kind           v1.NodeConditionType
		status         v1.ConditionStatus
		transition     metav1.Time
		firstHeartbeat metav1.Time
	}{
		{v1.NodeMemoryPressure, v1.ConditionFalse, t0, t0},
		{v1.NodeDiskPressure, v1.ConditionFalse, t0, t0},
		{v1.NodePIDPressure, v1.ConditionFalse, t0, t0},
		{v1.NodeReady, v1.ConditionTrue, later, t0}, // it turned Ready a minute later
	}
	for _, c := range cases {
		t.Run(string(c.kind), func(t *testing.T) {
			got := conditionOf(&second, c.kind)
			if got.Status != c.status || !got.LastTransitionTime.Equal(&c.transition) || !got.LastHeartbeatTime.Equal(&later) {
				t.Fatalf("%s: %s since %s, heartbeat %s", c.kind, got.Status, got.LastTransitionTime, got.LastHeartbeatTime)
			}
			if was := conditionOf(&first, c.kind); !was.LastHeartbeatTime.Equal(&c.firstHeartbeat) {
				t.Fatalf("%s: first heartbeat %s", c.kind, was.LastHeartbeatTime)
			}
		})
	}
}

func TestMustReport(t *testing.T) {
	n := testNode()
	last := n.status(t0)
	same := n.status(metav1.NewTime(t0.Add(10 * time.Second)))
	n.ready = true
	ready := n.status(metav1.NewTime(t0.Add(10 * time.Second)))
	reported := t0.Time
	cases := []struct {
		name        string
		last        *v1.NodeStatus
		lastPodCIDR string
		podCIDR     string
		status      *v1.NodeStatus
		now         time.Time
		want        bool
	}{
		{"nothing reported yet", nil, "", "", &same, reported.Add(time.Second), true},
		{"unchanged, 10 s after the last report", &last, "10.64.0.0/24", "10.64.0.0/24", &same, reported.Add(10 * time.Second), false},
		{"unchanged, just short of 5 minutes", &last, "10.64.0.0/24", "10.64.0.0/24", &same, reported.Add(statusReportEvery - time.Second), false},
		{"unchanged, 5 minutes on", &last, "10.64.0.0/24", "10.64.0.0/24", &same, reported.Add(statusReportEvery), true},
		{"the status changed", &last, "10.64.0.0/24", "10.64.0.0/24", &ready, reported.Add(10 * time.Second), true},
		{"a podCIDR assigned", &last, "", "10.64.0.0/24", &same, reported.Add(10 * time.Second), true},
		{"the podCIDR changed", &last, "10.64.0.0/24", "10.64.1.0/24", &same, reported.Add(10 * time.Second), true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := mustReport(c.last, c.lastPodCIDR, reported, c.podCIDR, c.status, c.now); got != c.want {
				t.Fatalf("mustReport = %v, want %v", got, c.want)
			}
		})
	}
}

func TestMergeStatusKeepsOthersConditions(t *testing.T) {
	cond := func(kind v1.NodeConditionType, status v1.ConditionStatus) v1.NodeCondition {
		return v1.NodeCondition{Type: kind, Status: status}
	}
	mine := []v1.NodeCondition{cond(v1.NodeMemoryPressure, v1.ConditionFalse), cond(v1.NodeReady, v1.ConditionTrue)}
	cases := []struct {
		name string
		old  []v1.NodeCondition
		want []v1.NodeCondition
	}{
		{"a new node", nil, mine},
		{"the kubelet's own, replaced", []v1.NodeCondition{cond(v1.NodeReady, v1.ConditionFalse)}, mine},
		{"node-problem-detector's, kept after the kubelet's",
			[]v1.NodeCondition{cond("KernelDeadlock", v1.ConditionFalse), cond(v1.NodeReady, v1.ConditionFalse),
				cond("ReadonlyFilesystem", v1.ConditionFalse)},
			append(append([]v1.NodeCondition{}, mine...), cond("KernelDeadlock", v1.ConditionFalse),
				cond("ReadonlyFilesystem", v1.ConditionFalse))},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := mergeStatus(v1.NodeStatus{Conditions: c.old}, v1.NodeStatus{Conditions: append([]v1.NodeCondition{}, mine...)})
			if len(got.Conditions) != len(c.want) {
				t.Fatalf("got %v, want %v", got.Conditions, c.want)
			}
			for i := range c.want {
				if got.Conditions[i].Type != c.want[i].Type || got.Conditions[i].Status != c.want[i].Status {
					t.Fatalf("condition %d: got %v, want %v", i, got.Conditions[i], c.want[i])
				}
			}
			if !readyOf(&got) {
				t.Fatal("the merged status must be the kubelet's Ready")
			}
		})
	}
}

// A refused status PATCH is tried again at once, as the kubelet's updateNodeStatus
// does, from a fresh GET of the node: up to nodeStatusUpdateRetry tries in one tick.
func TestStatusRetriesARefusedPatch(t *testing.T) {
	cases := []struct {
		name    string
		refused int // PATCHes refused before one goes through
		want    []string
	}{
		{"the first refused", 1, []string{"PATCH status 500", "GET node", "PATCH status 200"}},
		{"every try refused", 99, []string{"PATCH status 500", "GET node", "PATCH status 500", "GET node",
			"PATCH status 500", "GET node", "PATCH status 500", "GET node", "PATCH status 500"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var mu sync.Mutex
			var got []string
			patches := 0
			m := newTestMaster(t, 1, func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				defer mu.Unlock()
				switch {
				case r.Method == http.MethodPatch && strings.HasSuffix(r.URL.Path, "/nodes/hollow-node-0/status"):
					patches++
					if patches <= c.refused {
						got = append(got, "PATCH status 500")
						answer(w, http.StatusInternalServerError, `{"kind":"Status","apiVersion":"v1","status":"Failure","code":500}`)
						return
					}
					got = append(got, "PATCH status 200")
					answer(w, http.StatusOK, nodeJSON)
				case r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/nodes/hollow-node-0"):
					got = append(got, "GET node")
					answer(w, http.StatusOK, nodeJSON)
				case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/events"):
					answer(w, http.StatusCreated, `{"kind":"Event","apiVersion":"v1","metadata":{"name":"e","namespace":"default"}}`)
				default:
					answer(w, http.StatusNotFound, `{"kind":"Status","apiVersion":"v1","status":"Failure","code":404}`)
				}
			})
			n := m.node(t)
			n.self.Store(&v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "hollow-node-0", ResourceVersion: "7"}})
			n.ready = true
			n.syncStatus(context.Background())
			mu.Lock()
			defer mu.Unlock()
			if !slices.Equal(got, c.want) {
				t.Fatalf("requests %v, want %v", got, c.want)
			}
			if reported := n.lastReported != nil; reported != (c.refused < nodeStatusUpdateRetry) {
				t.Fatalf("status reported: %v", reported)
			}
		})
	}
}
