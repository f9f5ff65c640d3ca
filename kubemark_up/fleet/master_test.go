package main

import (
	"context"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"k8s.io/client-go/util/cert"
)

// seen is one request a test master received.
type seen struct {
	method, path, agent string
}

// testMaster is an HTTPS master (HTTP/2, as the apiserver) answering with handler and
// keeping what it received, with a fleet whose nodes, kube-proxy and
// node-problem-detector connect to it as they would to a real one (TLS, client
// certificates, the fleet's own transports).
type testMaster struct {
	server *httptest.Server
	fleet  *Fleet
	mu     sync.Mutex
	seen   []seen
}

func newTestMaster(t *testing.T, nodes int, handler http.HandlerFunc) *testMaster {
	t.Helper()
	m := &testMaster{}
	m.server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		m.seen = append(m.seen, seen{r.Method, r.URL.Path, r.UserAgent()})
		m.mu.Unlock()
		handler(w, r)
	}))
	m.server.EnableHTTP2 = true
	m.server.StartTLS()
	t.Cleanup(m.server.Close)
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	ca := write("ca.crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: m.server.Certificate().Raw}))
	certPEM, keyPEM, err := cert.GenerateSelfSignedCertKey("client", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	id := Identity{Cert: write("client.crt", certPEM), Key: write("client.key", keyPEM)}
	material, err := newTLSMaterial(ca)
	if err != nil {
		t.Fatal(err)
	}
	config := Config{Server: m.server.URL, CA: ca, Version: "v1.36.3", MaxPods: 110, Proxy: id, NPD: &id}
	for range nodes {
		config.Nodes = append(config.Nodes, NodeConf{Name: "hollow-node-0", Address: "198.18.0.1", Identity: id})
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	m.fleet = &Fleet{config: config, counters: newCounters(), tls: material}
	m.fleet.events = startEventSender(ctx, nodes, eventQueuePerNode, 0, m.fleet.counters)
	return m
}

func (m *testMaster) node(t *testing.T) *HollowNode {
	t.Helper()
	n, err := newHollowNode(m.fleet, m.fleet.config.Nodes[0])
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (m *testMaster) requests() []seen {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]seen(nil), m.seen...)
}
