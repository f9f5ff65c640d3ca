package main

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// realStatuses is tests/unit/real_pod_statuses.json: a real v1.36.3 kubelet's pod, every
// watch event of its life, as the apiserver stored it.
type realStatuses struct {
	Events []struct {
		Type       string       `json:"type"`
		Generation int64        `json:"generation"`
		Spec       *v1.PodSpec  `json:"spec"`
		Status     v1.PodStatus `json:"status"`
	} `json:"events"`
}

// flatten is a JSON document's leaves by path ("conditions[2].reason").
func flatten(prefix string, value any, out map[string]any) {
	switch v := value.(type) {
	case map[string]any:
		for k, child := range v {
			flatten(prefix+"."+k, child, out)
		}
	case []any:
		for i, child := range v {
			flatten(fmt.Sprintf("%s[%d]", prefix, i), child, out)
		}
	default:
		out[prefix] = v
	}
}

func leaves(t *testing.T, status v1.PodStatus) map[string]any {
	t.Helper()
	raw, err := json.Marshal(status)
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	out := map[string]any{}
	flatten("", doc, out)
	return out
}

// Values that differ by nature between two pods' lives: times, addresses, IDs, images.
var incidental = regexp.MustCompile(`(Time|At|startTime|IP|ip|containerID|imageID|image)$`)

// The fleet's status at each step the real kubelet wrote one carries the same fields
// with the same values, times, addresses and IDs aside: Pending, sandbox ready,
// Running, the first resync's pod-level resources, the terminating write (only
// observedGeneration changes), terminated.
func TestStatusesMatchTheRealKubeletFieldByField(t *testing.T) {
	raw, err := os.ReadFile("../../tests/unit/real_pod_statuses.json")
	if err != nil {
		t.Fatal(err)
	}
	var real realStatuses
	if err := json.Unmarshal(raw, &real); err != nil {
		t.Fatal(err)
	}
	if len(real.Events) != 11 || real.Events[0].Spec == nil {
		t.Fatalf("the fixture has %d events, want the 11 of one pod's life starting with its spec", len(real.Events))
	}
	table := &podTable{node: &HollowNode{conf: NodeConf{Address: "10.244.0.1"}}}
	began := metav1.NewTime(time.Date(2026, 12, 7, 17, 50, 0, 0, time.UTC))
	state := &podState{started: began, ip: []byte{10, 244, 0, 4}}
	// The kubelet's writes among the events: which event each step's status became.
	for _, step := range []struct {
		event int
		step  podStep
		name  string
	}{{2, stepPending, "Pending"}, {3, stepSandbox, "sandbox ready"}, {4, stepRunning, "Running"},
		{5, stepRunning, "first resync"}, {7, stepTerminating, "terminating"}, {8, stepKilled, "terminated"}} {
		state.step = step.step
		switch step.step {
		case stepSandbox:
			state.sandbox = metav1.NewTime(began.Add(time.Second))
		case stepTerminating:
			state.stopping = metav1.NewTime(began.Add(134 * time.Second))
		case stepKilled:
			state.finished = metav1.NewTime(began.Add(134 * time.Second))
		}
		before := real.Events[step.event-1]
		current := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "churn-2", Namespace: "fidelity-churn", UID: types.UID("u"),
			Generation: before.Generation}, Spec: *real.Events[0].Spec, Status: before.Status}
		got := leaves(t, table.status(current, state, metav1.NewTime(began.Add(time.Second))))
		want := leaves(t, real.Events[step.event].Status)
		var diffs []string
		for path, value := range want {
			theirs, found := got[path]
			switch {
			case !found:
				diffs = append(diffs, fmt.Sprintf("missing %s (real: %v)", path, value))
			case !incidental.MatchString(path) && fmt.Sprint(theirs) != fmt.Sprint(value):
				diffs = append(diffs, fmt.Sprintf("%s = %v (real: %v)", path, theirs, value))
			}
		}
		for path, value := range got {
			if _, found := want[path]; !found {
				diffs = append(diffs, fmt.Sprintf("extra %s = %v", path, value))
			}
		}
		sort.Strings(diffs)
		if len(diffs) > 0 {
			t.Errorf("%s: the fleet's status differs from the real kubelet's:\n  %s", step.name, strings.Join(diffs, "\n  "))
		}
	}
}
