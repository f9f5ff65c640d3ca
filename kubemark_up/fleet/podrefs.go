package main

// A pod's references: the ConfigMaps and Secrets it names, each followed by the
// kubelet's per-object watch while a pod of the node needs it, stopped as the
// kubelet's watch-based manager stops it.

import (
	"context"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
)

type objectRef struct{ resource, namespace, name string }

// podRef is one object a pod references; volume: through a volume, which the volume
// manager reads again every sync (so its watch is never idle).
type podRef struct {
	objectRef
	volume bool
}

// The watch-based manager's idle time: five times the kubelet's syncFrequency (1 min).
const maxIdleTime = 5 * time.Minute

// objectWatch is one per-object watch as the kubelet's watch-based manager
// (pkg/kubelet/util/manager/watch_based_manager.go) keeps it: started for the first
// pod that references the object, stopped when no pod does, when the object is
// immutable (for good) or when nothing has read it for maxIdleTime (until a pod
// reads it again).
type objectWatch struct {
	count      int // the references of the node's pods
	volumes    int // of them, through volumes
	cancel     context.CancelFunc
	gen        int // which start of the watch its handlers belong to
	synced     bool
	immutable  bool
	lastAccess time.Time
}

func (w *objectWatch) running() bool { return w.cancel != nil }

// watchLocked counts a pod's reference to one ConfigMap or Secret, its pod start
// reading it: the watch (a reflector with metadata.name=<name> in its namespace)
// starts if it is new, or again if it was stopped as idle.
func (t *podTable) watchLocked(ctx context.Context, ref podRef) {
	w := t.watches[ref.objectRef]
	if w == nil {
		w = &objectWatch{}
		t.watches[ref.objectRef] = w
	}
	w.count++
	if ref.volume {
		w.volumes++
	}
	w.lastAccess = time.Now()
	if !w.running() && !w.immutable {
		t.startWatchLocked(ctx, ref.objectRef, w)
	}
}

func (t *podTable) startWatchLocked(ctx context.Context, ref objectRef, w *objectWatch) {
	wctx, cancel := context.WithCancel(ctx)
	w.cancel, w.synced = cancel, false
	w.gen++
	gen := w.gen
	current := func() bool { return t.watches[ref] == w && w.gen == gen && w.running() }
	t.follow(wctx, &stream{client: t.node.kube.CoreV1().RESTClient(), resource: ref.resource, namespace: ref.namespace,
		fieldSelector: nameSelector(ref.name), events: t.node.watchCounter("kubelet " + ref.resource),
		on: func(kind watch.EventType, obj runtime.Object, _ bool) {
			t.mu.Lock()
			defer t.mu.Unlock()
			if current() && kind != watch.Deleted && immutable(obj) {
				w.immutable = true
				w.stopLocked()
			}
		},
		synced: func() {
			t.mu.Lock()
			defer t.mu.Unlock()
			if current() {
				w.synced = true
			}
		}})
}

func (w *objectWatch) stopLocked() {
	if w.cancel != nil {
		w.cancel()
		w.cancel = nil
	}
}

// immutable: a ConfigMap or Secret marked immutable, whose watch the kubelet stops.
func immutable(obj runtime.Object) bool {
	switch o := obj.(type) {
	case *v1.ConfigMap:
		return o.Immutable != nil && *o.Immutable
	case *v1.Secret:
		return o.Immutable != nil && *o.Immutable
	}
	return false
}

func (t *podTable) unwatchLocked(ref podRef) {
	w := t.watches[ref.objectRef]
	if w == nil {
		return
	}
	if ref.volume {
		w.volumes--
	}
	if w.count--; w.count <= 0 {
		w.stopLocked()
		delete(t.watches, ref.objectRef)
	}
}

// recycleIdle stops the watches nothing has read for maxIdleTime (those of objects
// only env or pull secrets name: read at container start, never again), each once
// its initial state is in, as the watch-based manager does every minute.
func (t *podTable) recycleIdle(context.Context) {
	t.recycleIdleAt(time.Now())
}

func (t *podTable) recycleIdleAt(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, w := range t.watches {
		if w.running() && w.synced && w.volumes == 0 && now.After(w.lastAccess.Add(maxIdleTime)) {
			w.stopLocked()
		}
	}
}

// references: the ConfigMaps and Secrets a pod's volumes, env and pull secrets name
// (kube-root-ca.crt through the projected token volume among them).
func references(pod *v1.Pod) []podRef {
	seen := map[objectRef]int{} // -> index in out
	var out []podRef
	volume := true
	add := func(resource, name string) {
		if name == "" {
			return
		}
		ref := objectRef{resource, pod.Namespace, name}
		if i, ok := seen[ref]; ok {
			out[i].volume = out[i].volume || volume
			return
		}
		seen[ref] = len(out)
		out = append(out, podRef{ref, volume})
	}
	for _, vol := range pod.Spec.Volumes {
		if vol.ConfigMap != nil {
			add("configmaps", vol.ConfigMap.Name)
		}
		if vol.Secret != nil {
			add("secrets", vol.Secret.SecretName)
		}
		if vol.Projected != nil {
			for _, src := range vol.Projected.Sources {
				if src.ConfigMap != nil {
					add("configmaps", src.ConfigMap.Name)
				}
				if src.Secret != nil {
					add("secrets", src.Secret.Name)
				}
			}
		}
	}
	volume = false
	containers := append(append([]v1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...)
	for _, c := range containers {
		for _, env := range c.Env {
			if env.ValueFrom == nil {
				continue
			}
			if r := env.ValueFrom.ConfigMapKeyRef; r != nil {
				add("configmaps", r.Name)
			}
			if r := env.ValueFrom.SecretKeyRef; r != nil {
				add("secrets", r.Name)
			}
		}
		for _, from := range c.EnvFrom {
			if from.ConfigMapRef != nil {
				add("configmaps", from.ConfigMapRef.Name)
			}
			if from.SecretRef != nil {
				add("secrets", from.SecretRef.Name)
			}
		}
	}
	for _, s := range pod.Spec.ImagePullSecrets {
		add("secrets", s.Name)
	}
	return out
}
