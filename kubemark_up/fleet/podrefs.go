package main

// A pod's references: the ConfigMaps and Secrets it names, each followed by the
// kubelet's per-object watch while a pod of the node needs it.

import (
	"context"

	v1 "k8s.io/api/core/v1"
)

type objectRef struct{ resource, namespace, name string }

type objectWatch struct {
	count  int
	cancel context.CancelFunc
}

// watchLocked starts (or counts) the kubelet's per-object watch of one ConfigMap or
// Secret: a reflector with metadata.name=<name> in its namespace.
func (t *podTable) watchLocked(ctx context.Context, ref objectRef) {
	if w := t.watches[ref]; w != nil {
		w.count++
		return
	}
	wctx, cancel := context.WithCancel(ctx)
	t.watches[ref] = &objectWatch{count: 1, cancel: cancel}
	counter := t.node.watchCounter("kubelet " + ref.resource)
	go (&stream{client: t.node.kube.CoreV1().RESTClient(), resource: ref.resource, namespace: ref.namespace,
		fieldSelector: nameSelector(ref.name), events: counter}).follow(wctx)
}

func (t *podTable) unwatchLocked(ref objectRef) {
	w := t.watches[ref]
	if w == nil {
		return
	}
	if w.count--; w.count <= 0 {
		w.cancel()
		delete(t.watches, ref)
	}
}

// references: the ConfigMaps and Secrets a pod's volumes, env and pull secrets name
// (kube-root-ca.crt through the projected token volume among them).
func references(pod *v1.Pod) []objectRef {
	seen := map[objectRef]bool{}
	var out []objectRef
	add := func(resource, name string) {
		if name == "" {
			return
		}
		ref := objectRef{resource, pod.Namespace, name}
		if !seen[ref] {
			seen[ref] = true
			out = append(out, ref)
		}
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
