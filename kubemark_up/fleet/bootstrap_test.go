package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509/pkix"
	"strings"
	"testing"

	certificatesv1 "k8s.io/api/certificates/v1"
)

func TestShardCarriesItsOrdinalsNodes(t *testing.T) {
	shard := &Shard{NodePrefix: "hollow-node-", PerProcess: 3, Count: 5, OrdinalEnv: "TEST_POD_NAME", AddressBase: "198.18.0.0"}
	t.Setenv("TEST_POD_NAME", "hollow-fleet-1")
	var config Config
	if err := shard.expand(&config); err != nil {
		t.Fatal(err)
	}
	got := []string{}
	for _, n := range config.Nodes {
		got = append(got, n.Name+"="+n.Address)
	}
	if want := "hollow-node-3=198.18.0.4 hollow-node-4=198.18.0.5"; strings.Join(got, " ") != want {
		t.Fatalf("got %v, want %s", got, want)
	}
	t.Setenv("TEST_POD_NAME", "hollow-fleet-2")
	if err := shard.expand(&Config{}); err == nil {
		t.Fatal("an ordinal past the last node must be an error")
	}
	if address, _ := nodeAddress("198.18.0.0", 300); address != "198.18.1.45" {
		t.Fatalf("node 300: %s", address)
	}
}

func TestDigestedNameIsTheKubelets(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	subject := &pkix.Name{Organization: []string{"system:nodes"}, CommonName: "system:node:a"}
	usages := []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth}
	a, _ := digestedName(key.Public(), subject, usages)
	b, _ := digestedName(key.Public(), subject, usages)
	other, _ := digestedName(key.Public(), &pkix.Name{Organization: []string{"system:nodes"}, CommonName: "system:node:b"}, usages)
	if !strings.HasPrefix(a, "node-csr-") || a != b || a == other {
		t.Fatalf("%s %s %s", a, b, other)
	}
}
