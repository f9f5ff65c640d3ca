package main

import (
	"fmt"
	"net"
	"reflect"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestReferences(t *testing.T) {
	token := v1.Volume{Name: "kube-api-access", VolumeSource: v1.VolumeSource{Projected: &v1.ProjectedVolumeSource{
		Sources: []v1.VolumeProjection{
			{ServiceAccountToken: &v1.ServiceAccountTokenProjection{Path: "token"}},
			{ConfigMap: &v1.ConfigMapProjection{LocalObjectReference: v1.LocalObjectReference{Name: "kube-root-ca.crt"}}},
		}}}}
	configMapVolume := func(name string) v1.Volume {
		return v1.Volume{Name: name, VolumeSource: v1.VolumeSource{ConfigMap: &v1.ConfigMapVolumeSource{
			LocalObjectReference: v1.LocalObjectReference{Name: name}}}}
	}
	secretVolume := func(name string) v1.Volume {
		return v1.Volume{Name: "s", VolumeSource: v1.VolumeSource{Secret: &v1.SecretVolumeSource{SecretName: name}}}
	}
	envFrom := func(resource, name string) v1.EnvVar {
		ref := v1.LocalObjectReference{Name: name}
		if resource == "configmaps" {
			return v1.EnvVar{Name: "A", ValueFrom: &v1.EnvVarSource{ConfigMapKeyRef: &v1.ConfigMapKeySelector{LocalObjectReference: ref, Key: "k"}}}
		}
		return v1.EnvVar{Name: "B", ValueFrom: &v1.EnvVarSource{SecretKeyRef: &v1.SecretKeySelector{LocalObjectReference: ref, Key: "k"}}}
	}
	cases := []struct {
		name string
		spec v1.PodSpec
		want []string
	}{
		{"nothing named", v1.PodSpec{Containers: []v1.Container{{Name: "c", Env: []v1.EnvVar{{Name: "X", Value: "1"}}}}}, nil},
		{"the projected token volume: kube-root-ca.crt", v1.PodSpec{Volumes: []v1.Volume{token}},
			[]string{"configmaps/kube-root-ca.crt"}},
		{"volumes, init and app containers' env and envFrom, then pull secrets, each once",
			v1.PodSpec{
				Volumes: []v1.Volume{configMapVolume("config"), secretVolume("tls"), token,
					{Name: "p", VolumeSource: v1.VolumeSource{Projected: &v1.ProjectedVolumeSource{Sources: []v1.VolumeProjection{
						{Secret: &v1.SecretProjection{LocalObjectReference: v1.LocalObjectReference{Name: "projected-secret"}}},
						{ConfigMap: &v1.ConfigMapProjection{LocalObjectReference: v1.LocalObjectReference{Name: "config"}}},
					}}}}},
				InitContainers: []v1.Container{{Name: "init", Env: []v1.EnvVar{envFrom("secrets", "init-secret")}}},
				Containers: []v1.Container{{Name: "app", Env: []v1.EnvVar{envFrom("configmaps", "settings"), envFrom("secrets", "tls")},
					EnvFrom: []v1.EnvFromSource{
						{ConfigMapRef: &v1.ConfigMapEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "env"}}},
						{SecretRef: &v1.SecretEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "env"}}},
					}}},
				ImagePullSecrets: []v1.LocalObjectReference{{Name: "registry"}, {Name: "tls"}},
			},
			[]string{"configmaps/config", "secrets/tls", "configmaps/kube-root-ca.crt", "secrets/projected-secret",
				"secrets/init-secret", "configmaps/settings", "configmaps/env", "secrets/env", "secrets/registry"}},
		{"a reference without a name is none", v1.PodSpec{Volumes: []v1.Volume{secretVolume("")},
			ImagePullSecrets: []v1.LocalObjectReference{{Name: ""}}}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "web-0"}, Spec: c.spec}
			var got []string
			for _, ref := range references(pod) {
				if ref.namespace != "team" {
					t.Fatalf("%v: a pod refers to objects of its own namespace", ref)
				}
				got = append(got, ref.resource+"/"+ref.name)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got %v, want %v", got, c.want)
			}
		})
	}
}

func TestFreeIP(t *testing.T) {
	all := func(cidr string, except ...string) map[string]bool {
		_, network, _ := net.ParseCIDR(cidr)
		used := map[string]bool{}
		for ip := freeIP(network, used); ip != nil; ip = freeIP(network, used) {
			used[ip.String()] = true
		}
		for _, ip := range except {
			delete(used, ip)
		}
		return used
	}
	cases := []struct {
		cidr string
		used map[string]bool
		want string // "" for none
	}{
		{"10.64.0.0/24", nil, "10.64.0.2"}, // .0 the network, .1 the bridge
		{"10.64.3.0/24", nil, "10.64.3.2"},
		{"10.64.0.0/24", map[string]bool{"10.64.0.2": true, "10.64.0.3": true}, "10.64.0.4"},
		{"10.64.0.0/24", map[string]bool{"10.64.0.3": true}, "10.64.0.2"}, // a freed address is taken again
		{"10.64.0.0/24", all("10.64.0.0/24", "10.64.0.254"), "10.64.0.254"},
		{"10.64.0.0/24", all("10.64.0.0/24"), ""}, // .255 is the broadcast address
		{"10.64.0.0/30", nil, "10.64.0.2"},
		{"10.64.0.0/30", map[string]bool{"10.64.0.2": true}, ""},
		{"10.64.0.0/31", nil, ""},
		{"10.64.0.0/32", nil, ""},
		{"10.64.0.0/16", all("10.64.0.0/24"), "10.64.0.255"}, // not a broadcast address in a larger range
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s with %d used", c.cidr, len(c.used)), func(t *testing.T) {
			_, network, err := net.ParseCIDR(c.cidr)
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			if ip := freeIP(network, c.used); ip != nil {
				got = ip.String()
			}
			if got != c.want {
				t.Fatalf("got %q, want %q", got, c.want)
			}
		})
	}
	if n := len(all("10.64.0.0/24")); n != 253 {
		t.Fatalf("a /24 gives %d pod addresses, want 253", n)
	}
}

func TestAllocateIPFromTheNodesPodCIDR(t *testing.T) {
	cases := []struct {
		name    string
		podCIDR string
		want    []string
	}{
		{"no podCIDR yet", "", []string{"<nil>"}},
		{"an IPv6 podCIDR", "fd00:10:64::/64", []string{"<nil>"}},
		{"each address once, then none", "10.64.7.0/29", []string{"10.64.7.2", "10.64.7.3", "10.64.7.4", "10.64.7.5",
			"10.64.7.6", "<nil>"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := testNode()
			n.self.Store(&v1.Node{Spec: v1.NodeSpec{PodCIDR: c.podCIDR}})
			table := &podTable{node: n}
			var got []string
			for range c.want {
				got = append(got, table.allocateIP().String())
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got %v, want %v", got, c.want)
			}
		})
	}
}

func TestMissingAfterARelist(t *testing.T) {
	known := func(uids map[string]string) map[string]*podState {
		out := map[string]*podState{}
		for k, uid := range uids {
			out[k] = &podState{uid: uid}
		}
		return out
	}
	cases := []struct {
		name   string
		known  map[string]string
		listed map[string]string
		want   map[string]string
	}{
		{"all still there", map[string]string{"a/web-0": "u1", "a/web-1": "u2"},
			map[string]string{"a/web-0": "u1", "a/web-1": "u2"}, map[string]string{}},
		{"deleted while the watch was down", map[string]string{"a/web-0": "u1", "a/web-1": "u2"},
			map[string]string{"a/web-0": "u1"}, map[string]string{"a/web-1": "u2"}},
		{"recreated under its name: the old one is gone", map[string]string{"a/web-0": "u1"},
			map[string]string{"a/web-0": "u9"}, map[string]string{"a/web-0": "u1"}},
		{"new pods are not missing ones", map[string]string{}, map[string]string{"a/web-0": "u1"}, map[string]string{}},
		{"an empty relist: every pod is gone", map[string]string{"a/web-0": "u1", "b/web-0": "u3"},
			map[string]string{}, map[string]string{"a/web-0": "u1", "b/web-0": "u3"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := missing(known(c.known), c.listed); !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got %v, want %v", got, c.want)
			}
		})
	}
}
