package main

// A fleet's connections: per component and node one TLS connection, a client set of
// only the API groups it uses, and the count of the requests it carries (the status
// file's).

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/client-go/kubernetes"
	coordinationv1 "k8s.io/client-go/kubernetes/typed/coordination/v1"
	corev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	discoveryv1 "k8s.io/client-go/kubernetes/typed/discovery/v1"
	networkingv1 "k8s.io/client-go/kubernetes/typed/networking/v1"
	nodev1 "k8s.io/client-go/kubernetes/typed/node/v1"
	resourcev1 "k8s.io/client-go/kubernetes/typed/resource/v1"
	storagev1 "k8s.io/client-go/kubernetes/typed/storage/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/flowcontrol"
	"k8s.io/klog/v2"
)

// clients is one component's client set with only the API groups it uses (a full
// clientset builds some 50 REST clients: memory a thousand nodes cannot spare). The
// embedded interface is nil: the kubelet code this is handed to (the lease
// controller, the pod status patch) calls only the groups set here.
type clients struct {
	kubernetes.Interface
	core         corev1.CoreV1Interface
	coordination coordinationv1.CoordinationV1Interface
	storage      storagev1.StorageV1Interface
	node         nodev1.NodeV1Interface
	discovery    discoveryv1.DiscoveryV1Interface
	networking   networkingv1.NetworkingV1Interface
	resource     resourcev1.ResourceV1Interface
}

func (c *clients) CoreV1() corev1.CoreV1Interface                         { return c.core }
func (c *clients) CoordinationV1() coordinationv1.CoordinationV1Interface { return c.coordination }
func (c *clients) StorageV1() storagev1.StorageV1Interface                { return c.storage }
func (c *clients) NodeV1() nodev1.NodeV1Interface                         { return c.node }
func (c *clients) DiscoveryV1() discoveryv1.DiscoveryV1Interface          { return c.discovery }
func (c *clients) NetworkingV1() networkingv1.NetworkingV1Interface       { return c.networking }
func (c *clients) ResourceV1() resourcev1.ResourceV1Interface             { return c.resource }

// tlsMaterial: the CA pool and each identity's key pair, parsed once per fleet (the
// kube-proxy and node-problem-detector identities are shared by every node).
type tlsMaterial struct {
	pool  *x509.CertPool
	mu    sync.Mutex
	pairs map[string]*tls.Certificate
}

func newTLSMaterial(caFile string) (*tlsMaterial, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no certificate", caFile)
	}
	return &tlsMaterial{pool: pool, pairs: map[string]*tls.Certificate{}}, nil
}

func (m *tlsMaterial) pair(id Identity) (*tls.Certificate, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if pair, ok := m.pairs[id.Cert]; ok {
		return pair, nil
	}
	pair, err := tls.LoadX509KeyPair(id.Cert, id.Key)
	if err != nil {
		return nil, err
	}
	m.pairs[id.Cert] = &pair
	return &pair, nil
}

// connection is one component's HTTP/2 transport: its own TCP and TLS connection
// (from bindTo when set), with client-go's transport defaults (HTTP/2 health checks).
// The requests it carries are counted for the status file. Clients are built over it
// with httpClient, which adds client-go's wrappers (the User-Agent among them).
func (f *Fleet) connection(id Identity, bindTo, component string) (http.RoundTripper, error) {
	pair, err := f.tls.pair(id)
	if err != nil {
		return nil, err
	}
	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	if bindTo != "" {
		dialer.LocalAddr = &net.TCPAddr{IP: net.ParseIP(bindTo)}
	}
	t := utilnet.SetTransportDefaults(&http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: f.tls.pool, Certificates: []tls.Certificate{*pair}, MinVersion: tls.VersionTLS12},
		DialContext:     dialer.DialContext,
	})
	t.Proxy = nil // loopback or the master's address: never through a proxy from the environment
	return &counting{next: t, c: f.counters, component: component}, nil
}

// userAgent is the User-Agent a component's own binary of this release sends when it
// sets none (rest.DefaultKubernetesUserAgent: command/version (os/arch)
// kubernetes/commit, version and commit from client-go's stamps, as the kubelet and
// kube-proxy built by the same recipe carry them), with the component's command in
// place of this binary's.
func userAgent(command string) string {
	ua := rest.DefaultKubernetesUserAgent()
	return command + ua[strings.Index(ua, "/"):]
}

// npdAgent: node-problem-detector sets its own, <command>/<its version>
// (pkg/exporters/k8sexporter/problemclient at v1.34.0, the version kubemark-up builds).
const npdAgent = "node-problem-detector/v1.34.0"

// httpClient is a client over a component's connection with client-go's transport
// wrappers for rc (rest.HTTPWrappersForConfig: its User-Agent, the debug wrappers at
// -v 6 and above), as rest.HTTPClientFor would build it over its own transport.
func httpClient(rc *rest.Config, conn http.RoundTripper, timeout time.Duration) (*http.Client, error) {
	rt, err := rest.HTTPWrappersForConfig(rc, conn)
	if err != nil {
		return nil, err
	}
	return &http.Client{Transport: rt, Timeout: timeout}, nil
}

// restConfig is a component's client configuration as the hollow node builds it
// (cmd/kubemark/app/hollow_node.go): protobuf, its QPS and burst, its user agent.
func (f *Fleet) restConfig(agent string, qps float32, burst int) *rest.Config {
	rc := &rest.Config{Host: f.config.Server, UserAgent: agent, QPS: qps, Burst: burst}
	rc.ContentType = "application/vnd.kubernetes.protobuf"
	rc.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	if qps > 0 {
		rc.RateLimiter = flowcontrol.NewTokenBucketRateLimiter(qps, burst) // shared by the component's groups
	}
	return rc
}

// newClients builds the named groups of one component over its connection.
func newClients(rc *rest.Config, conn http.RoundTripper, timeout time.Duration, groups ...string) (*clients, error) {
	hc, err := httpClient(rc, conn, timeout)
	if err != nil {
		return nil, err
	}
	c := &clients{}
	for _, group := range groups {
		switch group {
		case "core":
			c.core, err = corev1.NewForConfigAndClient(rc, hc)
		case "coordination":
			c.coordination, err = coordinationv1.NewForConfigAndClient(rc, hc)
		case "storage":
			c.storage, err = storagev1.NewForConfigAndClient(rc, hc)
		case "node":
			c.node, err = nodev1.NewForConfigAndClient(rc, hc)
		case "discovery":
			c.discovery, err = discoveryv1.NewForConfigAndClient(rc, hc)
		case "networking":
			c.networking, err = networkingv1.NewForConfigAndClient(rc, hc)
		case "resource":
			c.resource, err = resourcev1.NewForConfigAndClient(rc, hc)
		default:
			err = fmt.Errorf("unknown API group %q", group)
		}
		if err != nil {
			return nil, err
		}
	}
	return c, nil
}

// counters: requests by (component, verb, resource[/subresource]), their responses by
// code as well, and open watches, for the status file: the fleet's own account of its
// traffic (the watch events each node received are counted per node,
// HollowNode.watchEvents).
type counters struct {
	mu          sync.Mutex
	requests    map[string]int64
	responses   map[string]int64
	openWatches atomic.Int64
	// Failed requests are logged at most failureLogs per second (burst failureBurst);
	// those left out are counted and named in the next line logged.
	failureLog flowcontrol.RateLimiter
	unlogged   atomic.Int64
}

const (
	failureLogs  = 1
	failureBurst = 10
)

func newCounters() *counters {
	return &counters{requests: map[string]int64{}, responses: map[string]int64{},
		failureLog: flowcontrol.NewTokenBucketRateLimiter(failureLogs, failureBurst)}
}

func (c *counters) add(key string) {
	c.mu.Lock()
	c.requests[key]++
	c.mu.Unlock()
}

func (c *counters) respond(key string) {
	c.mu.Lock()
	c.responses[key]++
	c.mu.Unlock()
}

func (c *counters) snapshot() map[string]int64 { return c.copyOf(c.requests) }

// responseSnapshot: responses by "component verb resource code", code "error" for a
// request that got no response (a transport error, a timeout, a cancelled context).
func (c *counters) responseSnapshot() map[string]int64 { return c.copyOf(c.responses) }

func (c *counters) copyOf(m map[string]int64) map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// failed logs a failed request where a user sees it (klog's default level).
func (c *counters) failed(component, verb, resource string, req *http.Request, code int, err error) {
	if err != nil {
		c.errorS(err, "request failed", "component", component, "verb", verb, "resource", resource, "path", req.URL.Path)
		return
	}
	c.errorS(nil, "request refused", "component", component, "verb", verb, "resource", resource, "path", req.URL.Path,
		"code", code)
}

// errorS logs an error line, rate limited: a master refusing a fleet of a thousand
// nodes would otherwise get thousands of lines a second. The lines left out are
// counted in the next one logged.
func (c *counters) errorS(err error, msg string, keysAndValues ...any) {
	if !c.failureLog.TryAccept() {
		c.unlogged.Add(1)
		return
	}
	if left := c.unlogged.Swap(0); left > 0 {
		keysAndValues = append(keysAndValues, "linesLeftOutBefore", left)
	}
	klog.ErrorS(err, msg, keysAndValues...)
}

// expected: the responses the fleet's flows expect and handle (a CSINode or Node not
// there yet, one already there, a conflict retried), not worth a line each.
func expected(code int) bool {
	return code < 400 || code == http.StatusNotFound || code == http.StatusConflict
}

type counting struct {
	next      http.RoundTripper
	c         *counters
	component string
}

func (t *counting) RoundTrip(req *http.Request) (*http.Response, error) {
	verb, resource := classify(req)
	key := t.component + " " + verb + " " + resource
	t.c.add(key)
	resp, err := t.next.RoundTrip(req)
	switch {
	case err != nil:
		t.c.respond(key + " error")
		if req.Context().Err() == nil { // not a watch or request the fleet itself ended
			t.c.failed(t.component, verb, resource, req, 0, err)
		}
	default:
		t.c.respond(key + " " + strconv.Itoa(resp.StatusCode))
		if !expected(resp.StatusCode) {
			t.c.failed(t.component, verb, resource, req, resp.StatusCode, nil)
		}
	}
	if verb == "WATCH" && err == nil && resp.StatusCode == http.StatusOK {
		t.c.openWatches.Add(1)
		resp.Body = &watchBody{readCloser: resp.Body, c: t.c}
	}
	return resp, err
}

type readCloser = interface {
	Read([]byte) (int, error)
	Close() error
}

type watchBody struct {
	readCloser
	c    *counters
	once sync.Once
}

func (b *watchBody) Close() error {
	b.once.Do(func() { b.c.openWatches.Add(-1) })
	return b.readCloser.Close()
}

// classify names a request as the apiserver's metrics do: verb (LIST and WATCH for
// collection reads, DELETECOLLECTION) and resource[/subresource].
func classify(req *http.Request) (string, string) {
	parts := strings.Split(strings.Trim(req.URL.Path, "/"), "/")
	if len(parts) > 0 && parts[0] == "api" {
		parts = parts[min(2, len(parts)):]
	} else if len(parts) > 0 && parts[0] == "apis" {
		parts = parts[min(3, len(parts)):]
	}
	if len(parts) > 2 && parts[0] == "namespaces" {
		parts = parts[2:]
	}
	resource, name, sub := "", "", ""
	if len(parts) > 0 {
		resource = parts[0]
	}
	if len(parts) > 1 {
		name = parts[1]
	}
	if len(parts) > 2 {
		sub = parts[2]
	}
	verb := req.Method
	switch req.Method {
	case http.MethodGet:
		switch {
		case req.URL.Query().Get("watch") == "true" || req.URL.Query().Get("watch") == "1":
			verb = "WATCH"
		case name == "":
			verb = "LIST"
		}
	case http.MethodDelete:
		if name == "" {
			verb = "DELETECOLLECTION"
		}
	}
	if sub != "" {
		resource += "/" + sub
	}
	return verb, resource
}

// bindable tells whether connections may leave from addr: a loopback address, when the
// server is on loopback too (anything else stays unbound).
func bindable(addr, server string) bool {
	ip := net.ParseIP(addr)
	if ip == nil || !ip.IsLoopback() {
		return false
	}
	host := strings.TrimPrefix(strings.TrimPrefix(server, "https://"), "http://")
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	sip := net.ParseIP(strings.Trim(host, "[]"))
	return sip != nil && sip.IsLoopback() || host == "localhost"
}
