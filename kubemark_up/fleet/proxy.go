package main

// A hollow node's kube-proxy (its watches only: it programs nothing) and its
// node-problem-detector (the condition heartbeat).

import (
	"context"
	"encoding/json"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
)

// kube-proxy skips headless Services and those another proxy serves.
const proxySelector = "!service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name"

// npdHeartbeat: node-problem-detector's --k8s-exporter-heartbeat-period.
const npdHeartbeat = 5 * time.Minute

// runProxy opens a real v1.36 kube-proxy's watches (4 per node): first its own Node,
// the NodeManager's informer (cmd/kube-proxy/app/server.go builds it before anything
// else; only the stock hollow proxy skips it), then Services and EndpointSlices with
// kube-proxy's label selectors, and ServiceCIDRs. The Node stream is the same
// lightweight reflector as the kubelet's (follow.go): one goroutine, nothing kept,
// where an informer factory per node would hold a store, a queue and five goroutines.
func runProxy(ctx context.Context, n *HollowNode) {
	go (&stream{client: n.proxy.CoreV1().RESTClient(), resource: "nodes", fieldSelector: nameSelector(n.name()),
		events: n.watchCounter("kube-proxy nodes")}).follow(ctx)
	go (&stream{client: n.proxy.CoreV1().RESTClient(), resource: "services", fieldSelector: "spec.clusterIP!=None",
		labelSelector: proxySelector, events: n.watchCounter("kube-proxy services")}).follow(ctx)
	go (&stream{client: n.proxy.DiscoveryV1().RESTClient(), resource: "endpointslices", labelSelector: proxySelector,
		events: n.watchCounter("kube-proxy endpointslices")}).follow(ctx)
	(&stream{client: n.proxy.NetworkingV1().RESTClient(), resource: "servicecidrs",
		events: n.watchCounter("kube-proxy servicecidrs")}).follow(ctx)
}

// runNPD: node-problem-detector's condition heartbeat, a strategic merge PATCH of its
// conditions on the node's status, at once and then every heartbeat period.
func runNPD(ctx context.Context, n *HollowNode) {
	since := metav1.Now()
	go every(ctx, npdHeartbeat, func(ctx context.Context) {
		now := metav1.Now()
		conditions := []v1.NodeCondition{
			{Type: "KernelDeadlock", Status: v1.ConditionFalse, Reason: "KernelHasNoDeadlock", Message: "kernel has no deadlock",
				LastHeartbeatTime: now, LastTransitionTime: since},
			{Type: "ReadonlyFilesystem", Status: v1.ConditionFalse, Reason: "FilesystemIsNotReadOnly",
				Message: "Filesystem is not read-only", LastHeartbeatTime: now, LastTransitionTime: since},
		}
		patch, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": conditions}})
		if err != nil {
			return
		}
		_, err = n.npd.CoreV1().Nodes().PatchStatus(ctx, n.name(), patch)
		if err != nil {
			klog.V(2).InfoS("node-problem-detector patch failed", "node", n.name(), "err", err)
		}
	})
}
