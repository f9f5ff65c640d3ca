package main

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/tools/cache"
)

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

func nameSelector(name string) string {
	return fields.OneTermEqualSelector("metadata.name", name).String()
}
