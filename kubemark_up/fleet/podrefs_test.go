package main

import (
	"context"
	"reflect"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"
)

func TestReferences(t *testing.T) {
	token := v1.Volume{Name: "kube-api-access", VolumeSource: v1.VolumeSource{Projected: &v1.ProjectedVolumeSource{
		Sources: []v1.VolumeProjection{
			{ServiceAccountToken: &v1.ServiceAccountTokenProjection{Path: "token"}},
			{ConfigMap: &v1.ConfigMapProjection{LocalObjectReference: v1.LocalObjectReference{Name: "kube-root-ca.crt"}}},
		}}}}
	configMapVolume := func(name string) v1.Volume {
		return v1.Volume{Name: name, VolumeSource: v1.VolumeSource{ConfigMap: &v1.ConfigMapVolumeSource{
			LocalObjectReference: v1.LocalObjectReference{Name: name}}}}
	}
	secretVolume := func(name string) v1.Volume {
		return v1.Volume{Name: "s", VolumeSource: v1.VolumeSource{Secret: &v1.SecretVolumeSource{SecretName: name}}}
	}
	envFrom := func(resource, name string) v1.EnvVar {
		ref := v1.LocalObjectReference{Name: name}
		if resource == "configmaps" {
			return v1.EnvVar{Name: "A", ValueFrom: &v1.EnvVarSource{ConfigMapKeyRef: &v1.ConfigMapKeySelector{LocalObjectReference: ref, Key: "k"}}}
		}
		return v1.EnvVar{Name: "B", ValueFrom: &v1.EnvVarSource{SecretKeyRef: &v1.SecretKeySelector{LocalObjectReference: ref, Key: "k"}}}
	}
	cases := []struct {
		name string
		spec v1.PodSpec
		want []string
	}{
		{"nothing named", v1.PodSpec{Containers: []v1.Container{{Name: "c", Env: []v1.EnvVar{{Name: "X", Value: "1"}}}}}, nil},
		{"the projected token volume: kube-root-ca.crt", v1.PodSpec{Volumes: []v1.Volume{token}},
			[]string{"configmaps/kube-root-ca.crt"}},
		{"volumes, init and app containers' env and envFrom, then pull secrets, each once",
			v1.PodSpec{
				Volumes: []v1.Volume{configMapVolume("config"), secretVolume("tls"), token,
					{Name: "p", VolumeSource: v1.VolumeSource{Projected: &v1.ProjectedVolumeSource{Sources: []v1.VolumeProjection{
						{Secret: &v1.SecretProjection{LocalObjectReference: v1.LocalObjectReference{Name: "projected-secret"}}},
						{ConfigMap: &v1.ConfigMapProjection{LocalObjectReference: v1.LocalObjectReference{Name: "config"}}},
					}}}}},
				InitContainers: []v1.Container{{Name: "init", Env: []v1.EnvVar{envFrom("secrets", "init-secret")}}},
				Containers: []v1.Container{{Name: "app", Env: []v1.EnvVar{envFrom("configmaps", "settings"), envFrom("secrets", "tls")},
					EnvFrom: []v1.EnvFromSource{
						{ConfigMapRef: &v1.ConfigMapEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "env"}}},
						{SecretRef: &v1.SecretEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "env"}}},
					}}},
				ImagePullSecrets: []v1.LocalObjectReference{{Name: "registry"}, {Name: "tls"}},
			},
			[]string{"configmaps/config", "secrets/tls", "configmaps/kube-root-ca.crt", "secrets/projected-secret",
				"secrets/init-secret", "configmaps/settings", "configmaps/env", "secrets/env", "secrets/registry"}},
		{"a reference without a name is none", v1.PodSpec{Volumes: []v1.Volume{secretVolume("")},
			ImagePullSecrets: []v1.LocalObjectReference{{Name: ""}}}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "web-0"}, Spec: c.spec}
			var got []string
			for _, ref := range references(pod) {
				if ref.namespace != "team" {
					t.Fatalf("%v: a pod refers to objects of its own namespace", ref)
				}
				got = append(got, ref.resource+"/"+ref.name)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got %v, want %v", got, c.want)
			}
		})
	}
}

func TestReferencesThroughVolumes(t *testing.T) {
	pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "web-0"}, Spec: v1.PodSpec{
		Volumes: []v1.Volume{{Name: "c", VolumeSource: v1.VolumeSource{ConfigMap: &v1.ConfigMapVolumeSource{
			LocalObjectReference: v1.LocalObjectReference{Name: "config"}}}}},
		Containers: []v1.Container{{Name: "app", EnvFrom: []v1.EnvFromSource{
			{ConfigMapRef: &v1.ConfigMapEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "config"}}},
			{SecretRef: &v1.SecretEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "env"}}}}}},
		ImagePullSecrets: []v1.LocalObjectReference{{Name: "registry"}},
	}}
	got := map[string]bool{}
	for _, ref := range references(pod) {
		got[ref.resource+"/"+ref.name] = ref.volume
	}
	want := map[string]bool{"configmaps/config": true, "secrets/env": false, "secrets/registry": false}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("through a volume: %v, want %v", got, want)
	}
}

// watchTable is a pod table whose per-object watches are recorded, not started.
type watchTable struct {
	*podTable
	streams map[objectRef][]*stream
	ctxs    map[objectRef][]context.Context
}

func newWatchTable(t *testing.T) *watchTable {
	tn := newPodNode(t, instant())
	w := &watchTable{podTable: &tn.node.pods, streams: map[objectRef][]*stream{}, ctxs: map[objectRef][]context.Context{}}
	w.follow = func(ctx context.Context, s *stream) {
		ref := objectRef{s.resource, s.namespace, s.fieldSelector[len("metadata.name="):]}
		w.streams[ref] = append(w.streams[ref], s)
		w.ctxs[ref] = append(w.ctxs[ref], ctx)
	}
	return w
}

func (w *watchTable) add(refs ...podRef) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, ref := range refs {
		w.watchLocked(context.Background(), ref)
	}
}

// live: how many watches of ref were started, and whether the last one still runs.
func (w *watchTable) live(ref objectRef) (int, bool) {
	ctxs := w.ctxs[ref]
	if len(ctxs) == 0 {
		return 0, false
	}
	return len(ctxs), ctxs[len(ctxs)-1].Err() == nil
}

func TestPerObjectWatches(t *testing.T) {
	config := objectRef{"configmaps", "team", "config"}
	env := objectRef{"secrets", "team", "env"}
	frozen := objectRef{"configmaps", "team", "frozen"}

	t.Run("one watch per object however many pods; stopped with its last reference", func(t *testing.T) {
		w := newWatchTable(t)
		w.add(podRef{config, true}, podRef{config, true})
		if n, running := w.live(config); n != 1 || !running {
			t.Fatalf("%d watches, running %v", n, running)
		}
		w.mu.Lock()
		w.unwatchLocked(podRef{config, true})
		w.mu.Unlock()
		if _, running := w.live(config); !running {
			t.Fatal("stopped while a pod still references it")
		}
		w.mu.Lock()
		w.unwatchLocked(podRef{config, true})
		w.mu.Unlock()
		if _, running := w.live(config); running || w.watches[config] != nil {
			t.Fatal("still watched with no reference")
		}
	})

	t.Run("idle: only what no volume reads, once synced, after the idle time; restarted when read again", func(t *testing.T) {
		w := newWatchTable(t)
		w.add(podRef{config, true}, podRef{env, false})
		later := time.Now().Add(maxIdleTime + time.Minute)
		w.recycleIdleAt(later)
		if _, running := w.live(env); !running {
			t.Fatal("stopped before its initial state was in")
		}
		for _, ref := range []objectRef{config, env} {
			w.streams[ref][0].synced()
		}
		w.recycleIdleAt(time.Now())
		if _, running := w.live(env); !running {
			t.Fatal("stopped before the idle time")
		}
		w.recycleIdleAt(later)
		if _, running := w.live(env); running {
			t.Fatal("an idle watch not stopped")
		}
		if _, running := w.live(config); !running {
			t.Fatal("a volume's watch stopped as idle")
		}
		w.add(podRef{env, false}) // another pod reads it
		if n, running := w.live(env); n != 2 || !running {
			t.Fatalf("%d watches, running %v: not restarted", n, running)
		}
	})

	t.Run("immutable: stopped for good", func(t *testing.T) {
		w := newWatchTable(t)
		w.add(podRef{frozen, true}, podRef{config, true})
		w.streams[config][0].on(watch.Added, &v1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "config"}}, true)
		w.streams[frozen][0].on(watch.Added, &v1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "frozen"},
			Immutable: ptr.To(true)}, true)
		if _, running := w.live(frozen); running {
			t.Fatal("an immutable object still watched")
		}
		if _, running := w.live(config); !running {
			t.Fatal("a mutable object's watch stopped")
		}
		w.add(podRef{frozen, true})
		if n, _ := w.live(frozen); n != 1 {
			t.Fatal("an immutable object's watch started again")
		}
	})
}
