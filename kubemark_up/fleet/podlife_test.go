package main

import (
	"context"
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"
)

// realLifecycle is tests/unit/real_pod_lifecycle.json: one pod's requests as a real
// v1.36.3 kubelet sent them, from an audit log.
type realLifecycle struct {
	Sequence []struct {
		Verb, Resource, Subresource, Reason string
	} `json:"sequence"`
}

// split: the requests of the status manager, token manager and volume manager in
// order (Events and watches apart), the Events' reasons in order, and the watched
// resources, sorted.
func split(steps []string) (requests, events, watches []string) {
	for _, s := range steps {
		switch {
		case strings.HasPrefix(s, "EVENT "):
			events = append(events, strings.TrimPrefix(s, "EVENT "))
		case strings.HasPrefix(s, "WATCH "):
			watches = append(watches, s)
		default:
			requests = append(requests, s)
		}
	}
	return requests, events, watches
}

func lifecyclePod() *v1.Pod {
	pod := testPod("churn-1", v1.RestartPolicyAlways, nil)
	pod.Spec.Containers[0].VolumeMounts = []v1.VolumeMount{{Name: "config"}, {Name: "secret"}}
	pod.Spec.Volumes = []v1.Volume{
		{Name: "config", VolumeSource: v1.VolumeSource{ConfigMap: &v1.ConfigMapVolumeSource{
			LocalObjectReference: v1.LocalObjectReference{Name: "churn-1"}}}},
		{Name: "secret", VolumeSource: v1.VolumeSource{Secret: &v1.SecretVolumeSource{SecretName: "churn-1"}}},
		{Name: "token", VolumeSource: v1.VolumeSource{Projected: &v1.ProjectedVolumeSource{Sources: []v1.VolumeProjection{
			{ServiceAccountToken: &v1.ServiceAccountTokenProjection{Path: "token"}}}}}},
	}
	return pod
}

// TestLifecycleSequenceMatchesRealKubelet runs a pod's whole life on a fleet node (at
// the default pace and instant) and compares its requests with the real kubelet's.
func TestLifecycleSequenceMatchesRealKubelet(t *testing.T) {
	raw, err := os.ReadFile("../../tests/unit/real_pod_lifecycle.json")
	if err != nil {
		t.Fatal(err)
	}
	var real realLifecycle
	if err := json.Unmarshal(raw, &real); err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, s := range real.Sequence {
		switch {
		case s.Resource == "events":
			want = append(want, "EVENT "+s.Reason)
		case s.Resource == "configmaps" || s.Resource == "secrets":
			want = append(want, "WATCH "+s.Resource)
		default:
			want = append(want, strings.TrimSpace(s.Verb+" "+s.Resource+" "+s.Subresource))
		}
	}
	wantRequests, wantEvents, wantWatches := split(want)

	for _, life := range []PodLife{{}, instant()} {
		t.Run(time.Duration(life.start()).String(), func(t *testing.T) {
			pod := lifecyclePod()
			tn := newPodNode(t, life, pod)
			var mu sync.Mutex
			var got []string
			note := func(s string) {
				mu.Lock()
				got = append(got, s)
				mu.Unlock()
			}
			verbs := map[string]string{"get": "GET", "patch": "PATCH", "create": "POST", "delete": "DELETE"}
			tn.client.PrependReactor("*", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
				if verb, ok := verbs[a.GetVerb()]; ok && a.GetNamespace() == "team" {
					note(strings.TrimSpace(verb + " " + a.GetResource().Resource + " " + a.GetSubresource()))
				}
				return false, nil, nil
			})
			tn.node.pods.record = func(_ *v1.ObjectReference, _, reason, _ string, _ ...any) { note("EVENT " + reason) }
			tn.node.pods.follow = func(_ context.Context, s *stream) {
				if s.resource != "configmaps" || !strings.Contains(s.fieldSelector, "kube-root-ca.crt") {
					note("WATCH " + s.resource)
				}
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			table := &tn.node.pods
			table.seen(ctx, pod)
			// The tracker, not the client: the test's own reads are not the node's requests.
			peek := func() (*v1.Pod, error) {
				obj, err := tn.client.Tracker().Get(v1.SchemeGroupVersion.WithResource("pods"), "team", "churn-1")
				if err != nil {
					return nil, err
				}
				return obj.(*v1.Pod), nil
			}
			within(t, 10*time.Second, "Running", func() bool {
				p, err := peek()
				return err == nil && p.Status.Phase == v1.PodRunning
			})
			within(t, 10*time.Second, "the Started Event", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(got) > 0 && strings.HasPrefix(got[len(got)-1], "PATCH")
			})
			current, err := peek()
			if err != nil {
				t.Fatal(err)
			}
			deleting := current.DeepCopy()
			deleting.DeletionTimestamp = ptr.To(metav1.Now())
			table.seen(ctx, deleting)
			within(t, 10*time.Second, "the pod's DELETE", func() bool {
				_, err := peek()
				return apierrors.IsNotFound(err)
			})
			mu.Lock()
			steps := append([]string(nil), got...)
			mu.Unlock()
			requests, events, watches := split(steps)
			if !reflect.DeepEqual(requests, wantRequests) {
				t.Errorf("requests\n got %v\nwant %v", requests, wantRequests)
			}
			if !reflect.DeepEqual(events, wantEvents) {
				t.Errorf("events %v, want %v", events, wantEvents)
			}
			if len(watches) != len(wantWatches) {
				t.Errorf("watches %v, want %v", watches, wantWatches)
			}
		})
	}
}

// A pod that keeps running gets one more status sync from the pod worker's first
// resync: a GET and a PATCH that adds the pod-level resources read from its cgroup
// (a BestEffort pod's: an unlimited memory limit), and nothing after it, as measured.
func TestFirstResyncAddsThePodLevelResourcesOnce(t *testing.T) {
	defer func(period time.Duration) { resyncPeriod = period }(resyncPeriod)
	resyncPeriod = 200 * time.Millisecond
	pod := lifecyclePod()
	tn := newPodNode(t, instant(), pod)
	var mu sync.Mutex
	var got []string
	tn.client.PrependReactor("*", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetVerb() == "get" || a.GetVerb() == "patch" {
			mu.Lock()
			got = append(got, strings.TrimSpace(a.GetVerb()+" "+a.GetSubresource()))
			mu.Unlock()
		}
		return false, nil, nil
	})
	tn.node.pods.record = func(*v1.ObjectReference, string, string, string, ...any) {}
	tn.node.pods.follow = func(context.Context, *stream) {}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tn.node.pods.seen(ctx, pod)
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(got)
	}
	within(t, 10*time.Second, "Running", func() bool {
		obj, err := tn.client.Tracker().Get(v1.SchemeGroupVersion.WithResource("pods"), "team", "churn-1")
		return err == nil && obj.(*v1.Pod).Status.Phase == v1.PodRunning
	})
	running := count()
	within(t, 10*time.Second, "the resync's status write", func() bool { return count() >= running+2 })
	time.Sleep(4 * resyncPeriod) // no second one
	mu.Lock()
	after := append([]string(nil), got[running:]...)
	mu.Unlock()
	if want := []string{"get", "patch status"}; !reflect.DeepEqual(after, want) {
		t.Fatalf("after Running: %v, want %v", after, want)
	}
	obj, err := tn.client.Tracker().Get(v1.SchemeGroupVersion.WithResource("pods"), "team", "churn-1")
	if err != nil {
		t.Fatal(err)
	}
	resources := obj.(*v1.Pod).Status.Resources
	if resources == nil || resources.Limits.Memory().String() != "9007199254740988Ki" || len(resources.Requests) != 0 {
		t.Fatalf("pod-level resources after the resync %v, want only the unlimited memory limit", resources)
	}
}
