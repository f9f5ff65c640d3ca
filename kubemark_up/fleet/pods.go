package main

// A hollow node's pods: what the kubelet's pod workers and status manager send for
// each pod bound to it (its token, references and IP are podtoken.go's, podrefs.go's
// and podips.go's).

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/klog/v2"
	statusutil "k8s.io/kubernetes/pkg/util/pod"
	"k8s.io/utils/ptr"
)

type podState struct {
	mu       sync.Mutex
	uid      string
	ip       net.IP
	started  metav1.Time
	running  bool
	deleting bool
	refs     []objectRef
	token    *time.Timer
}

// podTable is the kubelet's pod side: its pods' watch (spec.nodeName), and per pod
// the status manager's GET and PATCH, the TokenRequest, the per-object ConfigMap and
// Secret watches, the Events; on deletion, the final status and the DELETE.
type podTable struct {
	node    *HollowNode
	mu      sync.Mutex
	pods    map[string]*podState // namespace/name
	watches map[objectRef]*objectWatch
	ips     map[string]bool
	listed  map[string]string // namespace/name -> UID: the pods of the initial state being read
}

// run follows the node's pods (spec.nodeName) as the kubelet's pod config source does:
// a pod seen is started (or killed when it carries a deletion timestamp), a pod deleted
// or missing from a relist's initial state is forgotten.
func (t *podTable) run(ctx context.Context) {
	n := t.node
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
		state = &podState{uid: string(pod.UID)}
		t.pods[key(pod)] = state
	}
	t.mu.Unlock()
	switch {
	case pod.DeletionTimestamp != nil:
		state.mu.Lock()
		already := state.deleting
		state.deleting = true
		state.mu.Unlock()
		if !already {
			go t.kill(ctx, pod, state)
		}
	case fresh && pod.Status.Phase != v1.PodSucceeded && pod.Status.Phase != v1.PodFailed:
		go t.start(ctx, pod, state)
	}
}

func (t *podTable) forget(k, uid string) {
	t.mu.Lock()
	state := t.pods[k]
	if state == nil || state.uid != uid {
		t.mu.Unlock()
		return
	}
	delete(t.pods, k)
	state.mu.Lock()
	if state.ip != nil {
		delete(t.ips, state.ip.String())
	}
	if state.token != nil {
		state.token.Stop()
	}
	refs := state.refs
	state.mu.Unlock()
	for _, ref := range refs {
		t.unwatchLocked(ref)
	}
	t.mu.Unlock()
}

// start: the status manager's Pending status, the volumes' watches and token, the
// container Events, then Running with a pod IP.
func (t *podTable) start(ctx context.Context, pod *v1.Pod, state *podState) {
	n := t.node
	state.mu.Lock()
	defer state.mu.Unlock()
	state.started = metav1.Now()
	t.setStatus(ctx, pod, state, false, false)
	refs := references(pod)
	t.mu.Lock()
	for _, ref := range refs {
		t.watchLocked(ctx, ref)
	}
	t.mu.Unlock()
	state.refs = refs
	if wantsToken(pod) {
		t.requestToken(ctx, pod, state)
	}
	state.ip = t.allocateIP()
	for _, c := range pod.Spec.Containers {
		ref := containerRef(pod, c.Name)
		n.event(ref, v1.EventTypeNormal, "Pulled", "Container image %q already present on machine", c.Image)
		n.event(ref, v1.EventTypeNormal, "Created", "Created container: %s", c.Name)
		n.event(ref, v1.EventTypeNormal, "Started", "Started container %s", c.Name)
	}
	if state.deleting {
		return
	}
	state.running = true
	// Until it lands: the status manager retries a status it could not write on its
	// next sync (every 10 s), and so does the fleet (a busy master may refuse or time out).
	state.retry(ctx, func() bool { return state.deleting || t.setStatus(ctx, pod, state, true, false) })
}

// kill: Killing per container, the final status, then DELETE with grace 0 and the UID
// precondition (the status manager's last act for a pod being deleted).
func (t *podTable) kill(ctx context.Context, pod *v1.Pod, state *podState) {
	n := t.node
	state.mu.Lock()
	defer state.mu.Unlock()
	for _, c := range pod.Spec.Containers {
		n.event(containerRef(pod, c.Name), v1.EventTypeNormal, "Killing", "Stopping container %s", c.Name)
	}
	if state.started.IsZero() {
		state.started = metav1.Now()
	}
	t.setStatus(ctx, pod, state, state.running, true)
	state.retry(ctx, func() bool {
		err := n.kube.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
			GracePeriodSeconds: ptr.To[int64](0), Preconditions: metav1.NewUIDPreconditions(string(pod.UID))})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			klog.V(2).InfoS("pod delete failed, retrying", "pod", key(pod), "err", err)
			return false
		}
		return true
	})
}

// retry runs done, with the pod's lock held, until it says so, every status sync
// period, the lock released while it waits (so the pod's events still get through).
func (state *podState) retry(ctx context.Context, done func() bool) {
	for !done() {
		state.mu.Unlock()
		select {
		case <-ctx.Done():
			state.mu.Lock()
			return
		case <-time.After(statusUpdateEvery):
		}
		state.mu.Lock()
	}
}

// setStatus: GET the pod, then the status manager's strategic merge patch with the
// UID precondition.
func (t *podTable) setStatus(ctx context.Context, pod *v1.Pod, state *podState, running, terminated bool) bool {
	n := t.node
	pods := n.kube.CoreV1().Pods(pod.Namespace)
	current, err := pods.Get(ctx, pod.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) || err == nil && string(current.UID) != state.uid {
		return true // gone, or another pod of that name: nothing left to write
	}
	if err != nil {
		klog.V(2).InfoS("pod get failed", "pod", key(pod), "err", err)
		return false
	}
	now := metav1.Now()
	ready := running && !terminated
	boolStatus := func(b bool) v1.ConditionStatus {
		if b {
			return v1.ConditionTrue
		}
		return v1.ConditionFalse
	}
	notReady := ""
	if !ready {
		notReady = "ContainersNotReady"
	}
	status := v1.PodStatus{
		Phase:     v1.PodPending,
		HostIP:    n.conf.Address,
		HostIPs:   []v1.HostIP{{IP: n.conf.Address}},
		StartTime: &state.started,
		QOSClass:  current.Status.QOSClass,
		Conditions: []v1.PodCondition{
			{Type: v1.PodReadyToStartContainers, Status: boolStatus(running || terminated), LastTransitionTime: now},
			{Type: v1.PodInitialized, Status: v1.ConditionTrue, LastTransitionTime: state.started},
			{Type: v1.PodReady, Status: boolStatus(ready), Reason: notReady, LastTransitionTime: now},
			{Type: v1.ContainersReady, Status: boolStatus(ready), Reason: notReady, LastTransitionTime: now},
			{Type: v1.PodScheduled, Status: v1.ConditionTrue, LastTransitionTime: state.started},
		},
	}
	if running {
		status.Phase = v1.PodRunning
	}
	if terminated {
		status.Phase = v1.PodSucceeded
		if current.Spec.RestartPolicy == v1.RestartPolicyAlways {
			status.Phase = v1.PodSucceeded // exit 0 on SIGTERM, as the pause container does
		}
	}
	if state.ip != nil && (running || terminated) {
		status.PodIP, status.PodIPs = state.ip.String(), []v1.PodIP{{IP: state.ip.String()}}
	}
	for _, c := range current.Spec.Containers {
		cs := v1.ContainerStatus{Name: c.Name, Image: c.Image, ImageID: "fake://" + c.Image, Ready: ready,
			Started: ptr.To(running && !terminated)}
		switch {
		case terminated:
			cs.State.Terminated = &v1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed", StartedAt: state.started,
				FinishedAt: now, ContainerID: containerID(pod, c.Name)}
			cs.ContainerID = containerID(pod, c.Name)
		case running:
			cs.State.Running = &v1.ContainerStateRunning{StartedAt: now}
			cs.ContainerID = containerID(pod, c.Name)
		default:
			cs.State.Waiting = &v1.ContainerStateWaiting{Reason: "ContainerCreating"}
		}
		status.ContainerStatuses = append(status.ContainerStatuses, cs)
	}
	if _, _, _, err := statusutil.PatchPodStatus(ctx, n.kube, pod.Namespace, pod.Name, current.UID, current.Status, status); err != nil {
		klog.V(2).InfoS("pod status patch failed", "pod", key(pod), "err", err)
		return apierrors.IsNotFound(err)
	}
	return true
}

func containerID(pod *v1.Pod, name string) string {
	return fmt.Sprintf("fake://%s-%s", pod.UID, name)
}

func containerRef(pod *v1.Pod, name string) *v1.ObjectReference {
	return &v1.ObjectReference{Kind: "Pod", Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID, APIVersion: "v1",
		ResourceVersion: pod.ResourceVersion, FieldPath: fmt.Sprintf("spec.containers{%s}", name)}
}
