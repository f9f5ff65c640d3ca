package main

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	corev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/utils/ptr"
)

func TestMissingAfterARelist(t *testing.T) {
	known := func(uids map[string]string) map[string]*podState {
		out := map[string]*podState{}
		for k, uid := range uids {
			out[k] = newPodState(uid)
		}
		return out
	}
	cases := []struct {
		name   string
		known  map[string]string
		listed map[string]string
		want   map[string]string
	}{
		{"all still there", map[string]string{"a/web-0": "u1", "a/web-1": "u2"},
			map[string]string{"a/web-0": "u1", "a/web-1": "u2"}, map[string]string{}},
		{"deleted while the watch was down", map[string]string{"a/web-0": "u1", "a/web-1": "u2"},
			map[string]string{"a/web-0": "u1"}, map[string]string{"a/web-1": "u2"}},
		{"recreated under its name: the old one is gone", map[string]string{"a/web-0": "u1"},
			map[string]string{"a/web-0": "u9"}, map[string]string{"a/web-0": "u1"}},
		{"new pods are not missing ones", map[string]string{}, map[string]string{"a/web-0": "u1"}, map[string]string{}},
		{"an empty relist: every pod is gone", map[string]string{"a/web-0": "u1", "b/web-0": "u3"},
			map[string]string{}, map[string]string{"a/web-0": "u1", "b/web-0": "u3"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := missing(known(c.known), c.listed); !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got %v, want %v", got, c.want)
			}
		})
	}
}

// podNode is a hollow node over client-go's fake clientset, its pods started at once
// unless life says otherwise, its Events kept in order.
type podNode struct {
	node   *HollowNode
	client *fake.Clientset
	mu     sync.Mutex
	events []string
}

func newPodNode(t *testing.T, life PodLife, objects ...runtime.Object) *podNode {
	t.Helper()
	client := fake.NewClientset(objects...)
	n := &HollowNode{conf: NodeConf{Name: "hollow-node-0", Address: "10.64.0.2"},
		kube: &clients{Interface: client, core: client.CoreV1()}, watchEvents: map[string]*atomic.Int64{}}
	for _, key := range watchKeys {
		n.watchEvents[key] = &atomic.Int64{}
	}
	n.self.Store(&v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "hollow-node-0"}, Spec: v1.NodeSpec{PodCIDR: "10.100.0.0/24"}})
	tn := &podNode{node: n, client: client}
	n.pods = newPodTable(n, life)
	n.pods.record = func(_ *v1.ObjectReference, _, reason, _ string, _ ...any) {
		tn.mu.Lock()
		tn.events = append(tn.events, reason)
		tn.mu.Unlock()
	}
	n.pods.follow = func(context.Context, *stream) {}
	n.pods.gone = func(string) {}
	return tn
}

func instant() PodLife { return PodLife{PodStartSeconds: ptr.To(0.0)} }

func testPod(name string, restart v1.RestartPolicy, annotations map[string]string) *v1.Pod {
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: name, UID: types.UID("uid-" + name), Annotations: annotations},
		Spec: v1.PodSpec{NodeName: "hollow-node-0", RestartPolicy: restart,
			Containers: []v1.Container{{Name: "pause", Image: "registry.k8s.io/pause:3.10"}}},
		Status: v1.PodStatus{Phase: v1.PodPending},
	}
}

// within fails the test unless done returns true before the timeout.
func within(t *testing.T, timeout time.Duration, what string, done func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !done() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (tn *podNode) pod(t *testing.T, name string) *v1.Pod {
	t.Helper()
	pod, err := tn.client.CoreV1().Pods("team").Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return pod
}

// returns runs f in a goroutine and fails the test unless it returns in time: a
// lock it waits for is held.
func returns(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		f()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s blocked: deadlock", what)
	}
}

func TestForceDeleteDuringFirstStatusPatch(t *testing.T) {
	pod := testPod("web-0", v1.RestartPolicyAlways, nil)
	tn := newPodNode(t, instant(), pod)
	patching, release := make(chan struct{}), make(chan struct{})
	var patches atomic.Int32
	// The first status patch hangs on a busy master (outside the fake clientset, whose
	// reactors run under its lock).
	tn.node.kube.core = hookedCore{CoreV1Interface: tn.client.CoreV1(), hook: func(verb string) error {
		if verb == "patch" && patches.Add(1) == 1 {
			close(patching)
			<-release
		}
		return nil
	}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	table := &tn.node.pods
	table.seen(ctx, pod)
	select {
	case <-patching:
	case <-time.After(5 * time.Second):
		t.Fatal("no status patch")
	}
	table.mu.Lock()
	first := table.pods["team/web-0"]
	table.mu.Unlock()
	// The force-delete reaches the node's pod watch while that patch is in flight.
	if err := tn.client.CoreV1().Pods("team").Delete(ctx, "web-0", metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
		t.Fatal(err)
	}
	returns(t, "forget during the first status patch", func() { table.forget("team/web-0", "uid-web-0") })
	returns(t, "the status file's pod count", func() { tn.node.podCount() })
	other := testPod("web-1", v1.RestartPolicyAlways, nil)
	if _, err := tn.client.CoreV1().Pods("team").Create(ctx, other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	returns(t, "another pod seen", func() { table.seen(ctx, other) })
	close(release)
	within(t, 10*time.Second, "the other pod Running", func() bool { return tn.pod(t, "web-1").Status.Phase == v1.PodRunning })
	table.mu.Lock()
	_, stillKnown := table.pods["team/web-0"]
	ips := len(table.ips)
	table.mu.Unlock()
	if stillKnown {
		t.Fatal("the deleted pod is still the node's")
	}
	returns(t, "the deleted pod's lifecycle", func() {
		first.work.Lock()
		defer first.work.Unlock()
	})
	if ips != 1 {
		t.Fatalf("%d pod IPs held, want the other pod's only", ips)
	}
}

func TestLifecycleToRunning(t *testing.T) {
	pod := testPod("web-0", v1.RestartPolicyAlways, nil)
	tn := newPodNode(t, instant(), pod)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tn.node.pods.seen(ctx, pod)
	within(t, 10*time.Second, "Running", func() bool { return tn.pod(t, "web-0").Status.Phase == v1.PodRunning })
	got := tn.pod(t, "web-0").Status
	if got.PodIP != "10.100.0.2" || got.HostIP != "10.64.0.2" || got.StartTime == nil {
		t.Fatalf("pod IP %q, host IP %q, start time %v", got.PodIP, got.HostIP, got.StartTime)
	}
	for _, kind := range []v1.PodConditionType{v1.PodReadyToStartContainers, v1.PodInitialized, v1.PodReady,
		v1.ContainersReady, v1.PodScheduled} {
		if c := findCondition(got.Conditions, kind); c == nil || c.Status != v1.ConditionTrue {
			t.Fatalf("condition %s: %+v", kind, c)
		}
	}
	cs := got.ContainerStatuses
	if len(cs) != 1 || cs[0].State.Running == nil || !cs[0].Ready || cs[0].Started == nil || !*cs[0].Started {
		t.Fatalf("container statuses %+v", cs)
	}
	tn.mu.Lock()
	events := fmt.Sprint(tn.events)
	tn.mu.Unlock()
	if events != "[Pulled Created Started]" {
		t.Fatalf("events %s", events)
	}
}

func TestStatusRetriedAfterNodeAuthorizerDenies(t *testing.T) {
	pod := testPod("web-0", v1.RestartPolicyAlways, nil)
	tn := newPodNode(t, instant(), pod)
	var gets atomic.Int32
	tn.node.kube.core = hookedCore{CoreV1Interface: tn.client.CoreV1(), hook: func(verb string) error {
		if verb == "get" && gets.Add(1) <= 3 { // the Pending GET and two Running ones: the pod's edge is not in the graph yet
			return apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "web-0",
				errors.New("unknown node 'hollow-node-0' cannot get pod"))
		}
		return nil
	}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tn.node.pods.seen(ctx, pod)
	within(t, 20*time.Second, "Running after the denials", func() bool { return tn.pod(t, "web-0").Status.Phase == v1.PodRunning })
	// The retries' pacing: the first within a second, then doubling up to the status sync period.
	backoff := statusRetry
	backoff.Jitter = 0
	var steps []time.Duration
	for range 7 {
		steps = append(steps, backoff.Step())
	}
	want := []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second,
		statusUpdateEvery, statusUpdateEvery}
	if !reflect.DeepEqual(steps, want) {
		t.Fatalf("retry pacing %v, want %v", steps, want)
	}
}

func TestBatchPodEnds(t *testing.T) {
	cases := []struct {
		name     string
		restart  v1.RestartPolicy
		exitCode string
		phase    v1.PodPhase
		reason   string
		code     int32
	}{
		{"Never, exit 0: Succeeded", v1.RestartPolicyNever, "", v1.PodSucceeded, "Completed", 0},
		{"Never, exit 3: Failed", v1.RestartPolicyNever, "3", v1.PodFailed, "Error", 3},
		{"OnFailure, exit 0: Succeeded", v1.RestartPolicyOnFailure, "0", v1.PodSucceeded, "Completed", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			annotations := map[string]string{lifetimeAnnotation: "0.05"}
			if c.exitCode != "" {
				annotations[exitCodeAnnotation] = c.exitCode
			}
			pod := testPod("job-0", c.restart, annotations)
			tn := newPodNode(t, instant(), pod)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			tn.node.pods.seen(ctx, pod)
			within(t, 10*time.Second, "ended", func() bool { return tn.pod(t, "job-0").Status.Phase == c.phase })
			got := tn.pod(t, "job-0").Status
			term := got.ContainerStatuses[0].State.Terminated
			if term == nil || term.ExitCode != c.code || term.Reason != c.reason || got.ContainerStatuses[0].Ready {
				t.Fatalf("container status %+v", got.ContainerStatuses[0])
			}
			if ready := findCondition(got.Conditions, v1.PodReady); ready.Status != v1.ConditionFalse || ready.Reason != "PodCompleted" {
				t.Fatalf("Ready %+v", ready)
			}
		})
	}
}

func TestPlan(t *testing.T) {
	seconds := func(s float64) PodLife { return PodLife{PodStartSeconds: &s} }
	ms := func(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }
	cases := []struct {
		name             string
		life             PodLife
		z                float64
		sandbox, running time.Duration // from bound
	}{
		{"default, the median draw: the measured 0.52 s", PodLife{}, 0, ms(442), ms(520)},
		{"default, the 99th percentile draw: the measured 0.69 s", PodLife{}, 2.326, ms(442 * 1.3198), ms(520 * 1.3198)},
		{"1 s: the spread scales", seconds(1), -1, ms(850 * 0.8625), ms(862.5)},
		{"a wild draw is clamped to 5 standard deviations", seconds(1), -50, ms(850 * 0.3125), ms(312.5)},
		{"0: instant pods", seconds(0), 0.9, 0, 0},
		{"negative: instant pods", seconds(-1), 0.9, 0, 0},
	}
	near := func(a, b time.Duration) bool { return (a - b).Abs() <= time.Millisecond }
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := c.life.plan(c.z)
			if !near(got.sandbox, c.sandbox) || !near(got.sandbox+got.containers, c.running) {
				t.Fatalf("plan %+v, want sandbox %v, running %v", got, c.sandbox, c.running)
			}
		})
	}
	if kill, teardown := seconds(0).stopping(); kill != 0 || teardown != 0 {
		t.Fatalf("instant pods stop at once, not %v, %v", kill, teardown)
	}
	if kill, teardown := (PodLife{}).stopping(); kill != defaultKill || teardown != defaultTeardown {
		t.Fatalf("deletion pace %v, %v", kill, teardown)
	}
}

func TestEnding(t *testing.T) {
	cases := []struct {
		name        string
		life        PodLife
		restart     v1.RestartPolicy
		annotations map[string]string
		ends        bool
		lifetime    time.Duration
		code        int32
	}{
		{"restartPolicy Always never ends", PodLife{PodLifetimeSeconds: 5}, v1.RestartPolicyAlways,
			map[string]string{lifetimeAnnotation: "1"}, false, 0, 0},
		{"Never without a lifetime runs until deleted", PodLife{}, v1.RestartPolicyNever, nil, false, 0, 0},
		{"Never, the setting's lifetime", PodLife{PodLifetimeSeconds: 5}, v1.RestartPolicyNever, nil, true, 5 * time.Second, 0},
		{"the annotation over the setting", PodLife{PodLifetimeSeconds: 5}, v1.RestartPolicyNever,
			map[string]string{lifetimeAnnotation: "1.5", exitCodeAnnotation: "2"}, true, 1500 * time.Millisecond, 2},
		{"annotation 0: runs until deleted", PodLife{PodLifetimeSeconds: 5}, v1.RestartPolicyNever,
			map[string]string{lifetimeAnnotation: "0"}, false, 0, 0},
		{"a bad annotation: runs until deleted", PodLife{}, v1.RestartPolicyNever,
			map[string]string{lifetimeAnnotation: "soon"}, false, 0, 0},
		{"OnFailure exiting non-zero is restarted: does not end", PodLife{}, v1.RestartPolicyOnFailure,
			map[string]string{lifetimeAnnotation: "1", exitCodeAnnotation: "1"}, false, 0, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			lifetime, code, ends := c.life.ending(testPod("p", c.restart, c.annotations))
			if ends != c.ends || lifetime != c.lifetime || code != c.code {
				t.Fatalf("ending = %v, %v, %v", lifetime, code, ends)
			}
		})
	}
}

// hookedCore is the node's core client with a hook before each pod GET and PATCH (the
// error it returns is the request's); outside the fake clientset, whose reactors run
// under its lock, and apart from the test's own reads.
type hookedCore struct {
	corev1.CoreV1Interface
	hook func(verb string) error
}

func (c hookedCore) Pods(namespace string) corev1.PodInterface {
	return hookedPods{PodInterface: c.CoreV1Interface.Pods(namespace), hook: c.hook}
}

type hookedPods struct {
	corev1.PodInterface
	hook func(verb string) error
}

func (p hookedPods) Get(ctx context.Context, name string, opts metav1.GetOptions) (*v1.Pod, error) {
	if err := p.hook("get"); err != nil {
		return nil, err
	}
	return p.PodInterface.Get(ctx, name, opts)
}

func (p hookedPods) Patch(ctx context.Context, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions,
	subresources ...string) (*v1.Pod, error) {
	if err := p.hook("patch"); err != nil {
		return nil, err
	}
	return p.PodInterface.Patch(ctx, name, pt, data, opts, subresources...)
}

func TestDeletedWhileStartingOrRunning(t *testing.T) {
	cases := []struct {
		name    string
		life    PodLife
		running bool
		events  string
	}{
		{"while its containers are being created: its start stops, no Killing", PodLife{PodStartSeconds: ptr.To(600.0)},
			false, "[]"},
		{"Running: Killing per container", instant(), true, "[Pulled Created Started Killing]"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pod := testPod("web-0", v1.RestartPolicyAlways, nil)
			tn := newPodNode(t, c.life, pod)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			table := &tn.node.pods
			table.seen(ctx, pod)
			if c.running {
				within(t, 10*time.Second, "Running", func() bool { return tn.pod(t, "web-0").Status.Phase == v1.PodRunning })
			} else {
				within(t, 10*time.Second, "Pending written", func() bool {
					return len(tn.pod(t, "web-0").Status.ContainerStatuses) == 1
				})
			}
			deleting := tn.pod(t, "web-0").DeepCopy()
			deleting.DeletionTimestamp = ptr.To(metav1.Now())
			table.seen(ctx, deleting)
			within(t, 10*time.Second, "the pod's DELETE", func() bool {
				_, err := tn.client.CoreV1().Pods("team").Get(ctx, "web-0", metav1.GetOptions{})
				return apierrors.IsNotFound(err)
			})
			tn.mu.Lock()
			events := fmt.Sprint(tn.events)
			tn.mu.Unlock()
			if events != c.events {
				t.Fatalf("events %s, want %s", events, c.events)
			}
			table.forget("team/web-0", "uid-web-0")
			table.mu.Lock()
			defer table.mu.Unlock()
			if len(table.pods) != 0 || len(table.ips) != 0 {
				t.Fatalf("left: pods %v, IPs %v", table.pods, table.ips)
			}
		})
	}
}
