package main

import (
	"fmt"
	"net"
	"reflect"
	"testing"

	v1 "k8s.io/api/core/v1"
)

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
