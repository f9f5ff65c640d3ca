package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"regexp"
	"runtime"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestClassify(t *testing.T) {
	cases := []struct {
		method, url    string
		verb, resource string
	}{
		{"GET", "/api/v1/nodes/hollow-node-0", "GET", "nodes"},
		{"GET", "/api/v1/nodes?fieldSelector=metadata.name%3Dhollow-node-0", "LIST", "nodes"},
		{"GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dn&watch=true", "WATCH", "pods"},
		{"GET", "/api/v1/namespaces/default/configmaps?fieldSelector=metadata.name%3Dkube-root-ca.crt&watch=1", "WATCH", "configmaps"},
		{"GET", "/api/v1/namespaces/default/pods/web-0", "GET", "pods"},
		{"GET", "/api/v1/namespaces", "LIST", "namespaces"},
		{"GET", "/api/v1/namespaces/default", "GET", "namespaces"},
		{"GET", "/apis/discovery.k8s.io/v1/endpointslices?labelSelector=x&watch=true", "WATCH", "endpointslices"},
		{"GET", "/apis/storage.k8s.io/v1/csinodes/hollow-node-0", "GET", "csinodes"},
		{"PATCH", "/api/v1/nodes/hollow-node-0/status", "PATCH", "nodes/status"},
		{"PATCH", "/api/v1/namespaces/default/pods/web-0/status", "PATCH", "pods/status"},
		{"POST", "/api/v1/namespaces/default/serviceaccounts/default/token", "POST", "serviceaccounts/token"},
		{"POST", "/api/v1/namespaces/default/events", "POST", "events"},
		{"POST", "/apis/certificates.k8s.io/v1/certificatesigningrequests", "POST", "certificatesigningrequests"},
		{"PUT", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/hollow-node-0", "PUT", "leases"},
		{"DELETE", "/api/v1/namespaces/default/pods/web-0", "DELETE", "pods"},
		{"DELETE", "/apis/resource.k8s.io/v1/resourceslices?fieldSelector=spec.nodeName%3Dn", "DELETECOLLECTION", "resourceslices"},
	}
	for _, c := range cases {
		t.Run(c.method+" "+c.url, func(t *testing.T) {
			verb, resource := classify(httptest.NewRequest(c.method, "https://master"+c.url, http.NoBody))
			if verb != c.verb || resource != c.resource {
				t.Fatalf("got %s %s, want %s %s", verb, resource, c.verb, c.resource)
			}
		})
	}
}

func TestBindable(t *testing.T) {
	cases := []struct {
		addr, server string
		want         bool
	}{
		{"127.0.0.2", "https://127.0.0.1:6443", true},
		{"127.0.0.2", "https://127.0.0.1", true},
		{"127.0.0.2", "https://localhost:6443", true},
		{"127.0.0.2", "https://[::1]:6443", true},
		{"127.0.0.2", "https://10.0.0.5:6443", false},       // a remote master: the address would not route back
		{"198.18.0.1", "https://127.0.0.1:6443", false},     // not an address of this machine
		{"127.0.0.2", "https://master.example:6443", false}, // a name other than localhost
		{"", "https://127.0.0.1:6443", false},
	}
	for _, c := range cases {
		t.Run(c.addr+" to "+c.server, func(t *testing.T) {
			if got := bindable(c.addr, c.server); got != c.want {
				t.Fatalf("bindable = %v, want %v", got, c.want)
			}
		})
	}
}

func answer(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(body))
}

const nodeJSON = `{"kind":"Node","apiVersion":"v1","metadata":{"name":"hollow-node-0","resourceVersion":"7"}}`

// Every component's requests carry its own binary's User-Agent, set by client-go's
// transport wrappers (not Go's default), and every response is counted by its code.
func TestEveryComponentSendsItsUserAgent(t *testing.T) {
	m := newTestMaster(t, 1, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/leases/hollow-node-0"):
			answer(w, http.StatusNotFound, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}`)
		case strings.HasSuffix(r.URL.Path, "/services"):
			answer(w, http.StatusServiceUnavailable, `{"kind":"Status","apiVersion":"v1","status":"Failure","code":503}`)
		default:
			answer(w, http.StatusOK, nodeJSON)
		}
	})
	n := m.node(t)
	ctx := context.Background()
	if _, err := n.kube.CoreV1().Nodes().Get(ctx, "hollow-node-0", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.heartbeat.CoordinationV1().Leases("kube-node-lease").Get(ctx, "hollow-node-0", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("lease GET: %v, want 404", err)
	}
	if _, err := n.proxy.CoreV1().Services("").List(ctx, metav1.ListOptions{}); err == nil {
		t.Fatal("services LIST: no error, want 503")
	}
	if _, err := n.npd.CoreV1().Nodes().PatchStatus(ctx, "hollow-node-0", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	platform := regexp.QuoteMeta(" (" + runtime.GOOS + "/" + runtime.GOARCH + ") kubernetes/")
	want := map[string]*regexp.Regexp{
		"/api/v1/nodes/hollow-node-0": regexp.MustCompile(`^kubelet/v\d+\.\d+\.\d+` + platform + `\S+$`),
		"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/hollow-node-0": regexp.MustCompile(
			`^kubelet/v\d+\.\d+\.\d+` + platform + `\S+$`),
		"/api/v1/services":                   regexp.MustCompile(`^kube-proxy/v\d+\.\d+\.\d+` + platform + `\S+$`),
		"/api/v1/nodes/hollow-node-0/status": regexp.MustCompile(`^node-problem-detector/v1\.34\.0$`),
	}
	got := m.requests()
	if len(got) != len(want) {
		t.Fatalf("requests %v, want one each of %v", got, want)
	}
	for _, r := range got {
		if !want[r.path].MatchString(r.agent) {
			t.Errorf("%s %s: User-Agent %q, want %s", r.method, r.path, r.agent, want[r.path])
		}
	}
	if got[0].agent != userAgent("kubelet") || got[1].agent != got[0].agent {
		t.Errorf("kubelet agents %q and %q, want %q", got[0].agent, got[1].agent, userAgent("kubelet"))
	}
	responses := m.fleet.counters.responseSnapshot()
	for key, count := range map[string]int64{"kubelet GET nodes 200": 1, "kubelet GET leases 404": 1,
		"kube-proxy LIST services 503": 1, "node-problem-detector PATCH nodes/status 200": 1} {
		if responses[key] != count {
			t.Errorf("responses[%q] = %d, want %d (all: %v)", key, responses[key], count, responses)
		}
	}
}
