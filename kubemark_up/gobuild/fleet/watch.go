package main

import (
	"context"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/cache"
)

// countStore keeps no objects, only a count of the watch events delivered after the
// initial list: the fleet needs the requests a reflector sends, not the objects (a
// kubelet's copy of every Service is the node's memory, not load on the master).
type countStore struct{ events *atomic.Int64 }

func (s countStore) Add(any) error               { s.events.Add(1); return nil }
func (s countStore) Update(any) error            { s.events.Add(1); return nil }
func (s countStore) Delete(any) error            { s.events.Add(1); return nil }
func (s countStore) Replace([]any, string) error { return nil }
func (s countStore) Resync() error               { return nil }

// listWatch is a ListerWatcher on one resource through a client's REST client, with
// the given field and label selectors, as the kubelet's and kube-proxy's informers
// build theirs.
func listWatch(getter cache.Getter, resource, namespace, fieldSelector, labelSelector string) cache.ListerWatcher {
	return cache.NewFilteredListWatchFromClient(getter, resource, namespace, func(o *metav1.ListOptions) {
		if fieldSelector != "" {
			o.FieldSelector = fieldSelector
		}
		if labelSelector != "" {
			o.LabelSelector = labelSelector
		}
	})
}

// reflect runs a reflector that holds nothing until ctx ends: LIST (or the streaming
// initial list of v1.36 clients), then WATCH with bookmarks, each watch 5-10 minutes,
// resumed from the last version seen and relisted only on 410, as client-go does.
func reflect(ctx context.Context, name string, lw cache.ListerWatcher, obj runtime.Object, events *atomic.Int64) {
	r := cache.NewReflectorWithOptions(lw, obj, countStore{events: events}, cache.ReflectorOptions{Name: name})
	r.RunWithContext(ctx)
}

func nameSelector(name string) string {
	return fields.OneTermEqualSelector("metadata.name", name).String()
}

var _ = time.Second
