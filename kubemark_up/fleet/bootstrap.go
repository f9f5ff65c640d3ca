package main

// A fleet in a pod (kubemark-up's pods engine with node_engine: fleet): it works out
// its own share of the nodes from its pod's ordinal, and each node gets its identity
// by the kubelet's TLS bootstrap, as a stock hollow kubelet in a pod does: a key made
// in memory, a CSR sent with the bootstrap token, the certificate the master's
// controller-manager approves and signs.

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/binary"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	certutil "k8s.io/client-go/util/cert"
	"k8s.io/client-go/util/certificate/csr"
	"k8s.io/klog/v2"
)

// Shard: this process's nodes are a slice of a numbered set, chosen by an ordinal read
// from the environment (a StatefulSet pod's name ends in -<ordinal>). Process o
// carries <prefix>(o*per) .. <prefix>(o*per+per-1), the last one fewer.
type Shard struct {
	NodePrefix string `json:"node_prefix"` // "hollow-node-"
	PerProcess int    `json:"per_process"`
	Count      int    `json:"count"`       // nodes in the whole set
	OrdinalEnv string `json:"ordinal_env"` // the variable holding NAME-<ordinal>
	// Each node's InternalIP is this address plus its index plus one: unique, from
	// 198.18.0.0/15 (the benchmarking range), never an address anything dials here.
	AddressBase string `json:"address_base"`
}

// Bootstrap: the nodes have no certificate files; each asks for one with this token.
type Bootstrap struct {
	TokenFile string `json:"token_file"`
}

// ordinal is the number at the end of NAME-<ordinal>.
func ordinal(value string) (int, error) {
	tail := value[strings.LastIndex(value, "-")+1:]
	o, err := strconv.Atoi(tail)
	if err != nil || o < 0 {
		return 0, fmt.Errorf("%q does not end in -<ordinal>", value)
	}
	return o, nil
}

// nodeAddress is base + index + 1 (base 198.18.0.0: node 0 is 198.18.0.1).
func nodeAddress(base string, index int) (string, error) {
	ip := net.ParseIP(base).To4()
	if ip == nil {
		return "", fmt.Errorf("address_base %q is not an IPv4 address", base)
	}
	n := binary.BigEndian.Uint32(ip) + uint32(index) + 1
	out := make(net.IP, 4)
	binary.BigEndian.PutUint32(out, n)
	return out.String(), nil
}

// expand fills config.Nodes from its shard: the nodes of this process's ordinal.
func (s *Shard) expand(config *Config) error {
	if s.PerProcess < 1 {
		return fmt.Errorf("shard.per_process must be at least 1")
	}
	value := os.Getenv(s.OrdinalEnv)
	if value == "" {
		return fmt.Errorf("$%s (the pod's name, NAME-<ordinal>) is not set", s.OrdinalEnv)
	}
	o, err := ordinal(value)
	if err != nil {
		return err
	}
	first, last := o*s.PerProcess, min(o*s.PerProcess+s.PerProcess, s.Count)
	if first >= last {
		return fmt.Errorf("ordinal %d carries no node (%d nodes, %d per process)", o, s.Count, s.PerProcess)
	}
	for i := first; i < last; i++ {
		address, err := nodeAddress(s.AddressBase, i)
		if err != nil {
			return err
		}
		config.Nodes = append(config.Nodes, NodeConf{Name: fmt.Sprintf("%s%d", s.NodePrefix, i), Address: address})
	}
	return nil
}

// expandConfig applies the shard, if the config has one, and checks what bootstrap needs.
func expandConfig(config *Config) error {
	if config.Shard != nil {
		if err := config.Shard.expand(config); err != nil {
			return err
		}
	}
	if config.Bootstrap == nil {
		for _, n := range config.Nodes {
			if n.Cert == "" || n.Key == "" {
				return fmt.Errorf("node %s has no certificate and the config no bootstrap", n.Name)
			}
		}
	}
	return nil
}

// bootstrapper asks for the nodes' client certificates with the bootstrap token.
type bootstrapper struct {
	client kubernetes.Interface
	tls    *tlsMaterial
}

func newBootstrapper(f *Fleet) (*bootstrapper, error) {
	token, err := os.ReadFile(f.config.Bootstrap.TokenFile)
	if err != nil {
		return nil, err
	}
	rc := &rest.Config{
		Host:            f.config.Server,
		BearerToken:     strings.TrimSpace(string(token)),
		TLSClientConfig: rest.TLSClientConfig{CAFile: f.config.CA},
		UserAgent:       userAgent("kubelet"),
		QPS:             -1, // each kubelet bootstraps with a client of its own: no shared limit
	}
	rc.Proxy = func(*http.Request) (*url.URL, error) { return nil, nil } // never a proxy from the environment
	rc.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		return &counting{next: rt, c: f.counters, component: "kubelet-bootstrap"}
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	return &bootstrapper{client: client, tls: f.tls}, nil
}

// identify gives a node its identity, as the kubelet's bootstrap does
// (pkg/kubelet/certificate/bootstrap): an ECDSA P-256 key, a CSR for
// CN=system:node:<name>, O=system:nodes named after its digest, sent to the
// kube-apiserver-client-kubelet signer, and the certificate once it is issued. The
// key never leaves memory. It retries with back-off until ctx ends.
func (b *bootstrapper) identify(ctx context.Context, conf NodeConf) (NodeConf, error) {
	delay := time.Second
	for {
		pair, err := b.request(ctx, conf.Name)
		if err == nil {
			key := "bootstrap:" + conf.Name
			b.tls.mu.Lock()
			b.tls.pairs[key] = pair
			b.tls.mu.Unlock()
			conf.Identity = Identity{Cert: key, Key: key}
			klog.InfoS("node certificate issued", "node", conf.Name, "address", conf.Address)
			return conf, nil
		}
		klog.InfoS("node certificate request failed, retrying", "node", conf.Name, "err", err, "in", delay)
		select {
		case <-ctx.Done():
			return conf, ctx.Err()
		case <-time.After(delay):
		}
		delay = min(delay*2, 30*time.Second)
	}
}

func (b *bootstrapper) request(ctx context.Context, name string) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	subject := &pkix.Name{Organization: []string{"system:nodes"}, CommonName: "system:node:" + name}
	request, err := certutil.MakeCSR(key, subject, nil, nil)
	if err != nil {
		return nil, err
	}
	usages := []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth}
	csrName, err := digestedName(key.Public(), subject, usages)
	if err != nil {
		return nil, err
	}
	reqName, reqUID, err := csr.RequestCertificateWithContext(ctx, b.client, request, csrName,
		certificatesv1.KubeAPIServerClientKubeletSignerName, nil, usages, key)
	if err != nil {
		return nil, err
	}
	wait, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	certPEM, err := csr.WaitForCertificate(wait, b.client, reqName, reqUID)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	pair, err := tls.X509KeyPair(certPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))
	if err != nil {
		return nil, err
	}
	return &pair, nil
}

// digestedName is the kubelet's name for its CSR (pkg/kubelet/certificate/bootstrap):
// node-csr- and a digest of the public key, subject and usages.
func digestedName(publicKey crypto.PublicKey, subject *pkix.Name, usages []certificatesv1.KeyUsage) (string, error) {
	hash := sha512.New512_256()
	encode := base64.RawURLEncoding.EncodeToString
	write := func(data []byte) {
		hash.Write([]byte(encode(data)))
		hash.Write([]byte{'|'})
	}
	publicKeyData, err := x509.MarshalPKIXPublicKey(publicKey)
	if err != nil {
		return "", err
	}
	write(publicKeyData)
	write([]byte(subject.CommonName))
	for _, v := range subject.Organization {
		write([]byte(v))
	}
	for _, v := range usages {
		write([]byte(v))
	}
	return "node-csr-" + encode(hash.Sum(nil)), nil
}
