package main

// A hollow node's pod IPs: the node's podCIDR, and in it the next free address for
// each pod it starts.

import (
	"encoding/binary"
	"net"
)

// podCIDR is the node's pod network, as the IPAM controller assigned it.
func (n *HollowNode) podCIDR() *net.IPNet {
	node := n.self.Load()
	if node == nil {
		return nil
	}
	_, cidr, err := net.ParseCIDR(node.Spec.PodCIDR)
	if err != nil {
		return nil
	}
	return cidr
}

// allocateIP hands out the next free address of the node's podCIDR (the network
// address and the first host, the bridge's, excluded).
func (t *podTable) allocateIP() net.IP {
	cidr := t.node.podCIDR()
	if cidr == nil || cidr.IP.To4() == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ips == nil {
		t.ips = map[string]bool{}
	}
	ip := freeIP(cidr, t.ips)
	if ip != nil {
		t.ips[ip.String()] = true
	}
	return ip
}

// freeIP is the lowest address of an IPv4 cidr not in used, from its third (the
// network address and the bridge's excluded) to the one before broadcast; nil when
// none is left.
func freeIP(cidr *net.IPNet, used map[string]bool) net.IP {
	base := binary.BigEndian.Uint32(cidr.IP.To4())
	ones, bits := cidr.Mask.Size()
	size := uint32(1) << (bits - ones)
	for i := uint32(2); i+1 < size; i++ {
		ip := make(net.IP, 4)
		binary.BigEndian.PutUint32(ip, base+i)
		if !used[ip.String()] {
			return ip
		}
	}
	return nil
}
