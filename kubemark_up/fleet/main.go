// Command kubemark-fleet runs many hollow nodes in one process: each node is its own
// kubelet client (system:node:<name>, its own TLS connection from its own address),
// with a kube-proxy and a node-problem-detector client of its own, and sends what a
// real v1.36 node sends (kubemark-up's node-traffic reference, section 7). The node
// lease controller and the node and pod status patches are the code the kubelet calls;
// the watches (follow.go) and the Events (events.go) send the requests client-go's
// reflector and event recorder send, from a fraction of their goroutines and memory.
// Nothing runs containers.
//
// Usage: kubemark-fleet [-status FILE] CONFIG.json. It runs until SIGTERM or SIGINT,
// writing every 30 s, and on SIGUSR1, a status file (by default beside CONFIG: CONFIG
// without .json, plus .status.json): requests, responses by code, Events (dropped
// ones counted), open watches.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	_ "net/http/pprof"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/component-base/version"
	"k8s.io/klog/v2"
)

// Config is what kubemark-up's fleet engine writes for one fleet process.
type Config struct {
	Server      string     `json:"server"`
	CA          string     `json:"ca"`
	Version     string     `json:"version"` // the kubelet version nodes report
	StartWindow float64    `json:"start_window"`
	MaxPods     int        `json:"max_pods"`
	Proxy       Identity   `json:"proxy"`
	NPD         *Identity  `json:"npd"`
	Nodes       []NodeConf `json:"nodes"`
	// Bind each node's connections to its own address (only when it is an address of
	// this machine, as loopback addresses are).
	BindAddresses bool `json:"bind_addresses"`
	// In a pod (bootstrap.go): the nodes from the pod's ordinal, identities by bootstrap.
	Shard     *Shard     `json:"shard"`
	Bootstrap *Bootstrap `json:"bootstrap"`
	PodLife              // the pods' timing (podlife.go)
	// Events a shard of nodes may hold waiting to be sent, per node (events.go); nil:
	// eventQueuePerNode. Beyond them an Event is dropped and counted.
	EventQueuePerNode *int `json:"event_queue_per_node"`
}

type Identity struct {
	Cert string `json:"cert"`
	Key  string `json:"key"`
}

type NodeConf struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	Identity
}

const statusEvery = 30 * time.Second

func main() {
	klog.InitFlags(nil)
	showVersion := flag.Bool("version", false, "print the version and exit")
	statusFile := flag.String("status", "", "the status file (default: beside CONFIG)")
	flag.Parse()
	if *showVersion {
		fmt.Printf("kubemark-fleet Kubernetes %s\n", version.Get().GitVersion)
		return
	}
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: kubemark-fleet CONFIG.json")
		os.Exit(2)
	}
	path := flag.Arg(0)
	raw, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kubemark-fleet: %v\n", err)
		os.Exit(2)
	}
	var config Config
	if err := json.Unmarshal(raw, &config); err != nil {
		fmt.Fprintf(os.Stderr, "kubemark-fleet: %s: %v\n", path, err)
		os.Exit(2)
	}
	if err := expandConfig(&config); err != nil {
		fmt.Fprintf(os.Stderr, "kubemark-fleet: %s: %v\n", path, err)
		os.Exit(2)
	}
	if config.MaxPods == 0 {
		config.MaxPods = 110
	}
	if os.Getenv("GOGC") == "" {
		// Memory is what a fleet runs out of first (CPU has room to spare: about 0.1
		// mCPU a node): collecting at 25 % heap growth instead of 100 % cut a 1,000-node
		// fleet's PSS from 727 to 545 MiB for 5 % more CPU (134 -> 141 mCPU), measured
		// on the same master; 10 % went to 518 MiB for 20 % more CPU.
		debug.SetGCPercent(25)
	}
	if addr := os.Getenv("KUBEMARK_FLEET_PPROF"); addr != "" {
		// For profiling the fleet itself (go tool pprof http://ADDR/debug/pprof/heap).
		go func() { _ = http.ListenAndServe(addr, nil) }()
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	material, err := newTLSMaterial(config.CA)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kubemark-fleet: %v\n", err)
		os.Exit(2)
	}
	fleet := &Fleet{config: config, counters: newCounters(), tls: material}
	fleet.events = newEventSender(ctx, len(config.Nodes), config.eventQueue(), fleet.counters)
	if config.Bootstrap != nil {
		if fleet.boot, err = newBootstrapper(fleet); err != nil {
			fmt.Fprintf(os.Stderr, "kubemark-fleet: bootstrap: %v\n", err)
			os.Exit(2)
		}
	}
	statusPath := strings.TrimSuffix(path, ".json") + ".status.json"
	if *statusFile != "" {
		statusPath = *statusFile
	}
	klog.InfoS("fleet starting", "nodes", len(config.Nodes), "window", config.StartWindow, "server", config.Server)
	fleet.run(ctx, statusPath)
	klog.InfoS("fleet stopped")
	klog.Flush()
}

// Fleet holds the hollow nodes of one process.
type Fleet struct {
	config   Config
	counters *counters
	tls      *tlsMaterial
	events   *eventSender
	boot     *bootstrapper // nil: the nodes' certificates are files
	mu       sync.Mutex
	nodes    []*HollowNode
}

func (f *Fleet) run(ctx context.Context, statusPath string) {
	window := time.Duration(f.config.StartWindow * float64(time.Second))
	var wg sync.WaitGroup
	for _, conf := range f.config.Nodes {
		// Spread over the window so that a fleet does not arrive as one thundering herd.
		delay := time.Duration(0)
		if window > 0 {
			delay = time.Duration(rand.Int64N(int64(window)))
		}
		wg.Add(1)
		go func(conf NodeConf) {
			defer wg.Done()
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay):
			}
			if f.boot != nil {
				var err error
				if conf, err = f.boot.identify(ctx, conf); err != nil {
					return
				}
			}
			node, err := newHollowNode(f, conf)
			if err != nil {
				klog.ErrorS(err, "hollow node could not start", "node", conf.Name)
				return
			}
			f.mu.Lock()
			f.nodes = append(f.nodes, node)
			f.mu.Unlock()
			node.run(ctx)
		}(conf)
	}
	ticker := time.NewTicker(statusEvery)
	defer ticker.Stop()
	// SIGUSR1 asks for the status file now (the tests and benchmarks read it).
	now := make(chan os.Signal, 1)
	signal.Notify(now, syscall.SIGUSR1)
	f.writeStatus(statusPath, false)
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			f.writeStatus(statusPath, false)
			return
		case <-ticker.C:
			f.writeStatus(statusPath, false)
		case <-now:
			f.writeStatus(statusPath, true)
		}
	}
}

// Status is the status file: read by the engine, the tests and the benchmarks.
type Status struct {
	Time        float64 `json:"time"`
	PID         int     `json:"pid"`
	Nodes       int     `json:"nodes"`
	Started     int     `json:"started"`
	Registered  int     `json:"registered"`
	Pods        int     `json:"pods"`
	OpenWatches int64   `json:"open_watches"`
	// Goroutines in the process, and its live heap at the last GC: the soak's leak
	// signals beside RSS (which also holds what the runtime has not yet given back).
	Goroutines    int              `json:"goroutines"`
	HeapLiveBytes uint64           `json:"heap_live_bytes"`
	Requests      map[string]int64 `json:"requests"`
	// Responses by "component verb resource code" (code "error": no response at all).
	Responses map[string]int64 `json:"responses"`
	// The kubelets' Events (events.go): recorded, sent, filtered, rejected, dropped.
	Events map[string]int64 `json:"events"`
	// The watch events each kind of reflector received after its initial state: over
	// all nodes, and per node in a status asked for (SIGUSR1) only, so that the file
	// written every statusEvery stays small however large the fleet.
	WatchEventsTotal map[string]int64            `json:"watch_events_total"`
	WatchEvents      map[string]map[string]int64 `json:"watch_events,omitempty"`
}

func (f *Fleet) status(perNode bool) Status {
	f.mu.Lock()
	nodes := append([]*HollowNode(nil), f.nodes...)
	f.mu.Unlock()
	s := Status{Time: float64(time.Now().UnixNano()) / 1e9, PID: os.Getpid(), Nodes: len(f.config.Nodes),
		Started: len(nodes), OpenWatches: f.counters.openWatches.Load(), Goroutines: runtime.NumGoroutine(), HeapLiveBytes: heapLive(), Requests: f.counters.snapshot(),
		Responses: f.counters.responseSnapshot(), Events: f.events.counts.snapshot()}
	s.WatchEventsTotal = make(map[string]int64, len(watchKeys))
	if perNode {
		s.WatchEvents = make(map[string]map[string]int64, len(nodes))
	}
	for _, n := range nodes {
		if n.registered.Load() {
			s.Registered++
		}
		s.Pods += n.podCount()
		events := make(map[string]int64, len(n.watchEvents))
		for key, count := range n.watchEvents {
			events[key] = count.Load()
			s.WatchEventsTotal[key] += events[key]
		}
		if perNode {
			s.WatchEvents[n.name()] = events
		}
	}
	return s
}

// heapLive is the heap's live bytes as the last GC marked them (runtime/metrics).
func heapLive() uint64 {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(sample)
	if sample[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return sample[0].Value.Uint64()
}

func (f *Fleet) writeStatus(path string, perNode bool) {
	data, err := json.Marshal(f.status(perNode))
	if err != nil {
		return
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err == nil {
		_ = os.Rename(tmp, path)
	}
}
