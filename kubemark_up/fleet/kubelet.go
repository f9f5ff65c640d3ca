package main

// A hollow node's kubelet: its clients and its start-up (registration, the lease
// controller, CSINode, the ResourceSlice wipe); its node status is nodestatus.go's.

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/component-helpers/apimachinery/lease"
	"k8s.io/klog/v2"
	kubeletutil "k8s.io/kubernetes/pkg/kubelet/util"
	"k8s.io/utils/clock"
)

// The kubelet's defaults (pkg/kubelet/apis/config/v1beta1/defaults.go) and constants.
const (
	leaseDurationSeconds = 40
	renewInterval        = 10 * time.Second // 0.25 x the lease duration
	statusUpdateEvery    = 10 * time.Second // nodeStatusUpdateFrequency
	statusReportEvery    = 5 * time.Minute  // nodeStatusReportFrequency
	kubeAPIQPS           = 50
	kubeAPIBurst         = 100
	jitter               = 0.04
)

// HollowNode is one node of the fleet: its kubelet, kube-proxy and node-problem-detector.
type HollowNode struct {
	fleet     *Fleet
	conf      NodeConf
	kube      *clients // the kubelet's client
	heartbeat *clients // leases and node status: the same connection, no client-side limit, 10 s timeout
	proxy     *clients
	npd       *clients

	self       atomic.Pointer[v1.Node] // the kubelet's node lister: its own Node, from its watch
	registered atomic.Bool

	statusMu     sync.Mutex
	ready        bool
	transitions  map[string]metav1.Time // condition type=status -> when it took that status
	lastReported *v1.NodeStatus
	lastPodCIDR  string
	reportedAt   time.Time

	pods podTable
	// Watch events delivered to each of its reflectors ("kube-proxy endpointslices").
	watchEvents map[string]*atomic.Int64
}

// watchCounter is the event counter of one of the node's reflectors.
func (n *HollowNode) watchCounter(key string) *atomic.Int64 {
	return n.watchEvents[key]
}

var watchKeys = []string{"kubelet services", "kubelet csidrivers", "kubelet runtimeclasses", "kubelet configmaps",
	"kubelet secrets", "kube-proxy nodes", "kube-proxy services", "kube-proxy endpointslices", "kube-proxy servicecidrs"}

func newHollowNode(f *Fleet, conf NodeConf) (*HollowNode, error) {
	bind := ""
	if f.config.BindAddresses && bindable(conf.Address, f.config.Server) {
		bind = conf.Address
	}
	n := &HollowNode{fleet: f, conf: conf, transitions: map[string]metav1.Time{}, watchEvents: map[string]*atomic.Int64{}}
	for _, key := range watchKeys {
		n.watchEvents[key] = &atomic.Int64{}
	}
	// The kubelet: one connection for its client and its heartbeat client, as the hollow
	// kubelet's two clients share client-go's cached transport.
	kubelet, err := f.connection(conf.Identity, bind, "kubelet")
	if err != nil {
		return nil, err
	}
	agent := userAgent("kubelet")
	if n.kube, err = newClients(f.restConfig(agent, kubeAPIQPS, kubeAPIBurst), kubelet, 0,
		"core", "storage", "node", "resource"); err != nil {
		return nil, err
	}
	if n.heartbeat, err = newClients(f.restConfig(agent, -1, 0), kubelet, statusUpdateEvery,
		"core", "coordination"); err != nil {
		return nil, err
	}
	proxy, err := f.connection(f.config.Proxy, bind, "kube-proxy")
	if err != nil {
		return nil, err
	}
	if n.proxy, err = newClients(f.restConfig(userAgent("kube-proxy"), 5, 10), proxy, 0,
		"core", "discovery", "networking"); err != nil {
		return nil, err
	}
	if f.config.NPD != nil {
		npd, err := f.connection(*f.config.NPD, bind, "node-problem-detector")
		if err != nil {
			return nil, err
		}
		if n.npd, err = newClients(f.restConfig(npdAgent, 5, 10), npd, 0, "core"); err != nil {
			return nil, err
		}
	}
	n.pods = newPodTable(n, f.config.PodLife)
	return n, nil
}

func (n *HollowNode) event(ref *v1.ObjectReference, kind, reason, format string, args ...any) {
	n.fleet.events.record(n, ref, kind, reason, format, args...)
}

func (n *HollowNode) name() string { return n.conf.Name }

// run is the kubelet's start-up (reference section 1.8), then its loops until ctx ends.
func (n *HollowNode) run(ctx context.Context) {
	name := n.name()
	core := n.kube.CoreV1().RESTClient()
	// K1: its own Node, the kubelet's node lister (managed fields dropped: nothing reads them).
	nodeSynced := make(chan struct{})
	var once sync.Once
	go (&stream{client: core, resource: "nodes", fieldSelector: nameSelector(name),
		on:     func(kind watch.EventType, obj runtime.Object, _ bool) { n.onNode(ctx, kind, obj) },
		synced: func() { once.Do(func() { close(nodeSynced) }) }}).follow(ctx)
	// K2, K4, K5: Services (headless ones filtered, v1.31+), CSIDrivers, RuntimeClasses.
	go (&stream{client: core, resource: "services", fieldSelector: "spec.clusterIP!=None",
		events: n.watchCounter("kubelet services")}).follow(ctx)
	go (&stream{client: n.kube.StorageV1().RESTClient(), resource: "csidrivers",
		events: n.watchCounter("kubelet csidrivers")}).follow(ctx)
	go (&stream{client: n.kube.NodeV1().RESTClient(), resource: "runtimeclasses",
		events: n.watchCounter("kubelet runtimeclasses")}).follow(ctx)
	// K3: its pods, once the node lister has synced.
	select {
	case <-ctx.Done():
		return
	case <-nodeSynced:
	}
	go n.pods.run(ctx)

	// The lease controller starts in parallel with registration (its first syncs find
	// no node and repeat), exactly the kubelet's: the same controller and owner func.
	leases := lease.NewController(clock.RealClock{}, n.heartbeat, name, leaseDurationSeconds, nil, renewInterval, name,
		v1.NamespaceNodeLease, kubeletutil.SetNodeOwnerFunc(ctx, n.heartbeat, name))
	go leases.Run(ctx)

	if !n.register(ctx) {
		return
	}
	n.registered.Store(true)
	n.startupEvents()
	go n.csiNode(ctx)
	go n.wipeResourceSlices(ctx)
	if n.npd != nil {
		runNPD(ctx, n)
	}
	go runProxy(ctx, n)
	// The runtime is "up" at once: fastStatusUpdateOnce sends the Ready patch now.
	n.statusMu.Lock()
	n.ready = true
	n.statusMu.Unlock()
	every(ctx, statusUpdateEvery, n.syncStatus)
}

// every runs f now, then again each period (jittered) after it returns, as
// wait.JitterUntil does, but from a timer: a node's periodic work holds no goroutine
// (and its stack) while it waits, which is most of the time.
func every(ctx context.Context, period time.Duration, f func(context.Context)) {
	var tick func()
	tick = func() {
		if ctx.Err() != nil {
			return
		}
		f(ctx)
		time.AfterFunc(wait.Jitter(period, jitter), tick)
	}
	tick()
}

func (n *HollowNode) nodeRef() *v1.ObjectReference {
	// The kubelet's own reference to its node: UID is the node's name.
	return &v1.ObjectReference{Kind: "Node", Name: n.name(), UID: types.UID(n.name())}
}

func (n *HollowNode) startupEvents() {
	ref := n.nodeRef()
	n.event(ref, v1.EventTypeNormal, "Starting", "Starting kubelet.")
	n.event(ref, v1.EventTypeNormal, "NodeHasSufficientMemory", "Node %s status is now: NodeHasSufficientMemory", n.name())
	n.event(ref, v1.EventTypeNormal, "NodeHasNoDiskPressure", "Node %s status is now: NodeHasNoDiskPressure", n.name())
	n.event(ref, v1.EventTypeNormal, "NodeHasSufficientPID", "Node %s status is now: NodeHasSufficientPID", n.name())
	n.event(ref, v1.EventTypeNormal, "NodeAllocatableEnforced", "Updated Node Allocatable limit across pods")
}

// register is the kubelet's registerWithAPIServer: POST the Node, retrying with
// back-off 100 ms to 7 s; on 409 (a restarted fleet) GET it and take it back.
func (n *HollowNode) register(ctx context.Context) bool {
	name := n.name()
	n.statusMu.Lock()
	node := &v1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: name,
			Labels: map[string]string{
				v1.LabelHostname: name, v1.LabelOSStable: "linux", v1.LabelArchStable: "amd64",
				"beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64",
			},
			Annotations: map[string]string{"volumes.kubernetes.io/controller-managed-attach-detach": "true"},
		},
		Spec:   v1.NodeSpec{ProviderID: "kubemark-up://" + name},
		Status: n.status(metav1.Now()),
	}
	n.statusMu.Unlock()
	delay := 100 * time.Millisecond
	for {
		_, err := n.kube.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
		if err == nil {
			return true
		}
		if apierrors.IsAlreadyExists(err) {
			if _, err := n.kube.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{}); err == nil {
				return true
			}
		} else {
			klog.InfoS("registration failed, retrying", "node", name, "err", err)
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(delay):
		}
		delay = min(delay*2, 7*time.Second)
	}
}

func (n *HollowNode) onNode(ctx context.Context, kind watch.EventType, obj runtime.Object) {
	node, ok := obj.(*v1.Node)
	if !ok {
		return
	}
	if kind == watch.Deleted {
		n.self.Store(nil)
		return
	}
	node.ManagedFields = nil
	n.self.Store(node)
	n.statusMu.Lock()
	changed := node.Spec.PodCIDR != n.lastPodCIDR && n.lastReported != nil
	n.statusMu.Unlock()
	if changed { // a new podCIDR is applied at once, as the kubelet updates its runtime config
		go n.syncStatus(ctx)
	}
}

// csiNode is the CSI plugin's start-up: GET csinodes/N (404), GET the node for its
// owner reference, POST the CSINode.
func (n *HollowNode) csiNode(ctx context.Context) {
	name := n.name()
	csi := n.kube.StorageV1().CSINodes()
	_ = wait.ExponentialBackoffWithContext(ctx, wait.Backoff{Duration: time.Second, Factor: 2, Steps: 6, Cap: 30 * time.Second},
		func(ctx context.Context) (bool, error) {
			if _, err := csi.Get(ctx, name, metav1.GetOptions{}); err == nil {
				return true, nil
			} else if !apierrors.IsNotFound(err) {
				return false, nil
			}
			node, err := n.kube.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			_, err = csi.Create(ctx, &storagev1.CSINode{
				ObjectMeta: metav1.ObjectMeta{Name: name, OwnerReferences: []metav1.OwnerReference{
					{APIVersion: "v1", Kind: "Node", Name: name, UID: node.UID}}},
				Spec: storagev1.CSINodeSpec{Drivers: []storagev1.CSINodeDriver{}},
			}, metav1.CreateOptions{})
			return err == nil || apierrors.IsAlreadyExists(err), nil
		})
}

// wipeResourceSlices: the v1.34+ kubelet deletes its node's DRA ResourceSlices at start.
func (n *HollowNode) wipeResourceSlices(ctx context.Context) {
	err := n.kube.ResourceV1().ResourceSlices().DeleteCollection(ctx, metav1.DeleteOptions{},
		metav1.ListOptions{FieldSelector: "spec.nodeName=" + n.name()})
	if err != nil {
		klog.V(2).InfoS("resource slices wipe failed", "node", n.name(), "err", err)
	}
}
