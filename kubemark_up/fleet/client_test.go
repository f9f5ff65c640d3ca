package main

import (
	"net/http"
	"net/http/httptest"
	"testing"
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
