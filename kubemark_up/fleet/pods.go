package main

// A hollow node's pods: what the kubelet's pod workers and status manager send for
// each pod bound to it, paced as a kubelet starts one (podlife.go); its token,
// references and IP are podtoken.go's, podrefs.go's and podips.go's.
//
// Locks: a pod's work lock (its lifecycle steps, held across requests) before its mu
// (its fields, never held across a request) before the table's mu. forget, called
// from the pod watch, never holds two of them at once.

import (
	"context"
	"fmt"
	"math"
	"net"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/klog/v2"
	statusutil "k8s.io/kubernetes/pkg/util/pod"
	"k8s.io/utils/ptr"
)

// statusRetry paces the status manager's retries of a status it could not write: a
// GET refused by the Node authorizer (the pod's edge not yet in its graph) or a busy
// master is tried again within a second, then less and less often, every status
// sync period at most.
var statusRetry = wait.Backoff{Duration: 500 * time.Millisecond, Factor: 2, Jitter: 0.2, Steps: math.MaxInt32,
	Cap: statusUpdateEvery}

// podStep is where a pod's lifecycle is, as its status reports it.
type podStep int

const (
	stepPending     podStep = iota // sandbox and containers being created
	stepSandbox                    // sandbox ready (its IP allocated), containers being created
	stepRunning                    // containers started, seen by the PLEG
	stepTerminating                // deleted: containers being stopped, not ready
	stepEnded                      // containers exited by themselves (a batch pod's lifetime)
	stepKilled                     // containers stopped for its deletion
)

type podState struct {
	uid  string
	work sync.Mutex // the pod's lifecycle steps, one at a time
	// life closes when the pod is being deleted or is forgotten: its waits end.
	life     chan struct{}
	lifeOnce sync.Once

	mu       sync.Mutex
	started  metav1.Time // seen by the kubelet (the status's startTime)
	sandbox  metav1.Time // sandbox created and containers started
	stopping metav1.Time // deleted while running: containers being stopped
	finished metav1.Time // containers exited
	step     podStep
	exitCode int32
	deleting bool
	gone     bool // forgotten: nothing more is allocated or scheduled for it
	ip       net.IP
	refs     []podRef
	token    *time.Timer
	resync   *time.Timer // the pod worker's first resync
}

func newPodState(uid string) *podState {
	return &podState{uid: uid, life: make(chan struct{})}
}

func (state *podState) endLife() { state.lifeOnce.Do(func() { close(state.life) }) }

// podTable is the kubelet's pod side: its pods' watch (spec.nodeName), and per pod
// the status manager's GET and PATCH, the TokenRequest, the per-object ConfigMap and
// Secret watches, the Events; on deletion, the final status and the DELETE.
type podTable struct {
	node    *HollowNode
	life    PodLife
	record  func(ref *v1.ObjectReference, kind, reason, format string, args ...any) // the node's Events
	gone    func(uid string)                                                        // a pod forgotten, for the Events' correlators
	follow  func(ctx context.Context, s *stream)                                    // starts a per-object watch
	mu      sync.Mutex
	pods    map[string]*podState // namespace/name
	watches map[objectRef]*objectWatch
	ips     map[string]bool
	listed  map[string]string // namespace/name -> UID: the pods of the initial state being read
}

func newPodTable(n *HollowNode, life PodLife) podTable {
	return podTable{node: n, life: life, record: n.event, follow: func(ctx context.Context, s *stream) { go s.follow(ctx) },
		gone:    func(uid string) { n.fleet.events.forget(n.name(), uid) },
		pods:    map[string]*podState{},
		watches: map[objectRef]*objectWatch{}, listed: map[string]string{}}
}

// run follows the node's pods (spec.nodeName) as the kubelet's pod config source does:
// a pod seen is started (or killed when it carries a deletion timestamp), a pod deleted
// or missing from a relist's initial state is forgotten.
func (t *podTable) run(ctx context.Context) {
	n := t.node
	every(ctx, time.Minute, t.recycleIdle)
	(&stream{client: n.kube.CoreV1().RESTClient(), resource: "pods", fieldSelector: "spec.nodeName=" + n.name(),
		on: func(kind watch.EventType, obj runtime.Object, initial bool) {
			pod, ok := obj.(*v1.Pod)
			if !ok {
				return
			}
			if initial {
				t.listed[key(pod)] = string(pod.UID)
			}
			if kind == watch.Deleted {
				t.forget(key(pod), string(pod.UID))
			} else {
				t.seen(ctx, pod)
			}
		},
		synced: func() {
			t.mu.Lock()
			gone := missing(t.pods, t.listed)
			t.mu.Unlock()
			for k, uid := range gone {
				t.forget(k, uid)
			}
			t.listed = map[string]string{}
		}}).follow(ctx)
}

// missing: the pods known (namespace/name -> state) that an initial state just read
// (listed: namespace/name -> UID) no longer holds, by name and UID; a pod recreated
// under its name is another pod.
func missing(known map[string]*podState, listed map[string]string) map[string]string {
	gone := map[string]string{} // namespace/name -> UID
	for k, state := range known {
		if listed[k] != state.uid {
			gone[k] = state.uid
		}
	}
	return gone
}

func (n *HollowNode) podCount() int {
	n.pods.mu.Lock()
	defer n.pods.mu.Unlock()
	return len(n.pods.pods)
}

func key(pod *v1.Pod) string { return pod.Namespace + "/" + pod.Name }

func (t *podTable) seen(ctx context.Context, pod *v1.Pod) {
	t.mu.Lock()
	state := t.pods[key(pod)]
	fresh := state == nil || state.uid != string(pod.UID)
	if fresh {
		state = newPodState(string(pod.UID))
		t.pods[key(pod)] = state
	}
	t.mu.Unlock()
	switch {
	case pod.DeletionTimestamp != nil:
		state.mu.Lock()
		already := state.deleting
		state.deleting = true
		if state.resync != nil {
			state.resync.Stop()
		}
		state.mu.Unlock()
		if !already {
			state.endLife()
			go t.kill(ctx, pod, state)
		}
	case fresh && pod.Status.Phase != v1.PodSucceeded && pod.Status.Phase != v1.PodFailed:
		go t.start(ctx, pod, state)
	}
}

// forget: the pod is gone from the API; its IP, watches and token go with it.
func (t *podTable) forget(k, uid string) {
	t.mu.Lock()
	state := t.pods[k]
	if state == nil || state.uid != uid {
		t.mu.Unlock()
		return
	}
	delete(t.pods, k)
	t.mu.Unlock()

	state.endLife()
	state.mu.Lock()
	state.gone = true
	ip, refs := state.ip, state.refs
	state.ip, state.refs = nil, nil
	if state.token != nil {
		state.token.Stop()
	}
	if state.resync != nil {
		state.resync.Stop()
	}
	state.mu.Unlock()

	t.release(ip, refs)
	t.gone(uid)
}

// release frees a pod's IP and drops its references' watches.
func (t *podTable) release(ip net.IP, refs []podRef) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if ip != nil {
		delete(t.ips, ip.String())
	}
	for _, ref := range refs {
		t.unwatchLocked(ref)
	}
}

// start is the pod worker's first sync and what follows it, as a real kubelet sends
// it (tests/unit/real_pod_lifecycle.json): the Pending status, the volumes' watches
// and token; the sandbox-ready status with Pulled and Created; Started and the
// Running status; for a batch pod with a lifetime, its end. Every status write is the
// status manager's GET, then a PATCH when something changed.
func (t *podTable) start(ctx context.Context, pod *v1.Pod, state *podState) {
	state.work.Lock()
	defer state.work.Unlock()
	plan := t.life.drawPlan()
	// The steps are paced from the pod's start, not one after the other's requests: the
	// kubelet's status manager writes beside its pod worker, not in its way.
	began := time.Now()
	sandboxAt, runningAt := began.Add(plan.sandbox), began.Add(plan.sandbox+plan.containers)
	state.mu.Lock()
	if state.gone || state.deleting {
		state.mu.Unlock()
		return
	}
	state.started = metav1.Now()
	state.mu.Unlock()
	// The status manager's first write. One refused (the Node authorizer's graph not yet
	// holding the pod) is tried again soon, until the sandbox's status would carry it.
	retry := wait.Backoff{Duration: 100 * time.Millisecond, Factor: 2, Jitter: 0.2, Steps: 4}
	for !t.writeStatus(ctx, pod, state, false) && retry.Steps > 0 && time.Until(sandboxAt) > 0 {
		if !sleep(state.life, min(retry.Step(), time.Until(sandboxAt))) {
			return
		}
	}

	// The volume manager: the references' watches, the projected token.
	refs := references(pod)
	state.mu.Lock()
	if state.gone || state.deleting {
		state.mu.Unlock()
		return
	}
	state.refs = refs
	t.mu.Lock()
	for _, ref := range refs {
		t.watchLocked(ctx, ref)
	}
	t.mu.Unlock()
	state.mu.Unlock()
	if wantsToken(pod) {
		t.requestToken(ctx, pod, state)
	}

	// The sandbox (its IP): its status, the containers created.
	if !sleep(state.life, time.Until(sandboxAt)) {
		return
	}
	state.mu.Lock()
	if state.gone || state.deleting {
		state.mu.Unlock()
		return
	}
	state.sandbox = metav1.Now()
	state.ip = t.allocateIP()
	state.step = stepSandbox
	state.mu.Unlock()
	for _, c := range pod.Spec.Containers {
		t.record(containerRef(pod, c.Name), v1.EventTypeNormal, "Pulled", "Container image %q already present on machine", c.Image)
	}
	t.writeStatus(ctx, pod, state, false) // superseded by Running if refused
	for _, c := range pod.Spec.Containers {
		t.record(containerRef(pod, c.Name), v1.EventTypeNormal, "Created", "Created container: %s", c.Name)
	}

	// The containers started, seen running.
	if !sleep(state.life, time.Until(runningAt)) {
		return
	}
	state.mu.Lock()
	if state.gone || state.deleting {
		state.mu.Unlock()
		return
	}
	state.step = stepRunning
	state.mu.Unlock()
	for _, c := range pod.Spec.Containers {
		t.record(containerRef(pod, c.Name), v1.EventTypeNormal, "Started", "Started container %s", c.Name)
	}
	if !t.writeStatus(ctx, pod, state, true) {
		return
	}

	// The pod worker's first resync, 60-90 s on: the pod is Running in the API by then,
	// so its status gains the pod-level resources read from its cgroup (podstatus.go).
	// A pod that runs until deleted waits for it on a timer, not a goroutine.
	resync := t.life.resync()
	lifetime, exitCode, ends := t.life.ending(pod)
	if !ends {
		state.mu.Lock()
		if !state.gone && !state.deleting {
			state.resync = time.AfterFunc(resync, func() { t.resync(ctx, pod, state) })
		}
		state.mu.Unlock()
		return
	}
	if resync < lifetime {
		if !sleep(state.life, resync) || !t.stillRunning(state) {
			return
		}
		t.writeStatus(ctx, pod, state, true)
		lifetime -= resync
	}
	if !sleep(state.life, lifetime) {
		return
	}
	state.mu.Lock()
	if state.gone || state.deleting {
		state.mu.Unlock()
		return
	}
	state.step, state.exitCode, state.finished = stepEnded, exitCode, metav1.Now()
	// A pod that has ended keeps its IP in its status, but its volumes are torn down:
	// its references' watches and its token refresh stop.
	refs, state.refs = state.refs, nil
	if state.token != nil {
		state.token.Stop()
		state.token = nil
	}
	state.mu.Unlock()
	t.release(nil, refs)
	t.writeStatus(ctx, pod, state, true)
}

// resync is the pod worker's periodic sync of a running pod: a status write (a GET, and
// a PATCH as the status changed).
func (t *podTable) resync(ctx context.Context, pod *v1.Pod, state *podState) {
	state.work.Lock()
	defer state.work.Unlock()
	if t.stillRunning(state) {
		t.writeStatus(ctx, pod, state, true)
	}
}

// stillRunning: the pod is running, not deleted or forgotten, so its resync goes out.
func (t *podTable) stillRunning(state *podState) bool {
	state.mu.Lock()
	defer state.mu.Unlock()
	return !state.gone && !state.deleting && state.step == stepRunning
}

// kill is a deleted pod's end as a real kubelet sends it: Killing per running
// container and the terminating status (not ready); the containers' terminated status
// (a terminal phase); the status manager's last two syncs (a GET each, nothing left to
// patch), the second ending in the DELETE with grace 0 and the UID precondition.
func (t *podTable) kill(ctx context.Context, pod *v1.Pod, state *podState) {
	state.work.Lock() // start has seen its life end and returned, or is finishing a request
	defer state.work.Unlock()
	kill, teardown := t.life.stopping()
	state.mu.Lock()
	running := state.step == stepRunning
	if state.started.IsZero() {
		state.started = metav1.Now()
	}
	if running {
		state.step, state.stopping = stepTerminating, metav1.Now()
	}
	state.mu.Unlock()
	if running {
		for _, c := range pod.Spec.Containers {
			t.record(containerRef(pod, c.Name), v1.EventTypeNormal, "Killing", "Stopping container %s", c.Name)
		}
		t.writeStatus(ctx, pod, state, false)
		if !sleep(ctx.Done(), kill) {
			return
		}
	}
	state.mu.Lock()
	if state.step != stepEnded {
		state.step, state.exitCode, state.finished = stepKilled, 0, metav1.Now()
	}
	state.mu.Unlock()
	t.writeStatus(ctx, pod, state, false)
	if !sleep(ctx.Done(), teardown) {
		return
	}
	t.writeStatus(ctx, pod, state, false) // the status up to date: a GET only
	if _, gone, _ := t.setStatus(ctx, pod, state); gone {
		return
	}
	backoff := statusRetry
	for ctx.Err() == nil {
		err := t.node.kube.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
			GracePeriodSeconds: ptr.To[int64](0), Preconditions: metav1.NewUIDPreconditions(string(pod.UID))})
		if err == nil || apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return
		}
		klog.V(2).InfoS("pod delete failed, retrying", "pod", key(pod), "err", err)
		if !sleep(ctx.Done(), backoff.Step()) {
			return
		}
	}
}

// writeStatus writes the pod's status as its state has it; with retry, until it lands
// (backing off as statusRetry says) or the pod's life or ctx ends. True: written (or
// the pod is gone, so nothing is left to write).
func (t *podTable) writeStatus(ctx context.Context, pod *v1.Pod, state *podState, retry bool) bool {
	backoff := statusRetry
	for {
		done, _, err := t.setStatus(ctx, pod, state)
		if done {
			return true
		}
		if !retry {
			return false
		}
		klog.V(2).InfoS("pod status not written, retrying", "pod", key(pod), "err", err)
		if ctx.Err() != nil || !sleep(state.life, backoff.Step()) {
			return false
		}
	}
}

// setStatus is the status manager's sync: GET the pod, then a strategic merge patch
// with the UID precondition when its status changed (none when it did not). written:
// up to date, or nothing left to write; gone: the pod is not there any more (or
// another pod has its name).
func (t *podTable) setStatus(ctx context.Context, pod *v1.Pod, state *podState) (written, gone bool, err error) {
	n := t.node
	current, err := n.kube.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) || err == nil && string(current.UID) != state.uid {
		return true, true, nil
	}
	if err != nil {
		return false, false, err
	}
	state.mu.Lock()
	status := t.status(current, state, metav1.Now())
	state.mu.Unlock()
	if _, _, _, err := statusutil.PatchPodStatus(ctx, n.kube, pod.Namespace, pod.Name, current.UID, current.Status, status); err != nil {
		return apierrors.IsNotFound(err), apierrors.IsNotFound(err), err
	}
	return true, false, nil
}

func containerRef(pod *v1.Pod, name string) *v1.ObjectReference {
	return &v1.ObjectReference{Kind: "Pod", Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID, APIVersion: "v1",
		ResourceVersion: pod.ResourceVersion, FieldPath: fmt.Sprintf("spec.containers{%s}", name)}
}
