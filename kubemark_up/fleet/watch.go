package main

import "k8s.io/apimachinery/pkg/fields"

// nameSelector is the field selector of one object by name, as the kubelet's node
// lister and its per-object ConfigMap and Secret watches use.
func nameSelector(name string) string {
	return fields.OneTermEqualSelector("metadata.name", name).String()
}
