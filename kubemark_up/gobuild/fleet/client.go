package main

import (
	"context"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// newClientset makes one identity's client as the hollow kubelet's is made
// (cmd/kubemark/app/hollow_node.go): protobuf, the given QPS and burst. The dialer is
// this client's own, which also keeps client-go from sharing a cached transport between
// clients: every node's components hold connections of their own, as separate
// processes would. With bindTo, connections leave from that address.
func newClientset(config Config, id Identity, agent, bindTo string, qps float32, burst int, timeout time.Duration,
	c *counters, component string) (*kubernetes.Clientset, error) {
	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	if bindTo != "" {
		dialer.LocalAddr = &net.TCPAddr{IP: net.ParseIP(bindTo)}
	}
	rc := &rest.Config{
		Host:            config.Server,
		TLSClientConfig: rest.TLSClientConfig{CAFile: config.CA, CertFile: id.Cert, KeyFile: id.Key},
		QPS:             qps,
		Burst:           burst,
		Timeout:         timeout,
		UserAgent:       agent,
		Dial:            dialer.DialContext,
	}
	rc.ContentType = "application/vnd.kubernetes.protobuf"
	rc.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	rc.Wrap(func(rt http.RoundTripper) http.RoundTripper { return &counting{next: rt, c: c, component: component} })
	return kubernetes.NewForConfig(rc)
}

// counters: requests by (component, verb, resource[/subresource]) and open watches,
// for the status file: the fleet's own account of what it sends.
type counters struct {
	mu          sync.Mutex
	requests    map[string]int64
	openWatches atomic.Int64
}

func newCounters() *counters { return &counters{requests: map[string]int64{}} }

func (c *counters) add(key string) {
	c.mu.Lock()
	c.requests[key]++
	c.mu.Unlock()
}

func (c *counters) snapshot() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int64, len(c.requests))
	for k, v := range c.requests {
		out[k] = v
	}
	return out
}

type counting struct {
	next      http.RoundTripper
	c         *counters
	component string
}

func (t *counting) RoundTrip(req *http.Request) (*http.Response, error) {
	verb, resource := classify(req)
	t.c.add(t.component + " " + verb + " " + resource)
	resp, err := t.next.RoundTrip(req)
	if verb == "WATCH" && err == nil && resp.StatusCode == http.StatusOK {
		t.c.openWatches.Add(1)
		resp.Body = &watchBody{ReadCloserish: resp.Body, c: t.c}
	}
	return resp, err
}

type ReadCloserish = interface {
	Read([]byte) (int, error)
	Close() error
}

type watchBody struct {
	ReadCloserish
	c    *counters
	once sync.Once
}

func (b *watchBody) Close() error {
	b.once.Do(func() { b.c.openWatches.Add(-1) })
	return b.ReadCloserish.Close()
}

// classify names a request as the apiserver's metrics do: verb (LIST and WATCH for
// collection reads) and resource[/subresource].
func classify(req *http.Request) (string, string) {
	parts := strings.Split(strings.Trim(req.URL.Path, "/"), "/")
	// /api/v1/... or /apis/group/version/...
	if len(parts) > 0 && parts[0] == "api" {
		parts = parts[min(2, len(parts)):]
	} else if len(parts) > 0 && parts[0] == "apis" {
		parts = parts[min(3, len(parts)):]
	}
	if len(parts) >= 2 && parts[0] == "namespaces" && len(parts) > 2 {
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

var _ = context.Background
