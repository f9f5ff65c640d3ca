package main

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
)

// The kubelet's recorder semantics: an event repeated for one object is created once
// and then counted by PATCHes; past the spam filter's burst of 25 per object the rest
// are held back (filtered, not dropped).
func TestEventsAreCorrelatedPerObject(t *testing.T) {
	var mu sync.Mutex
	calls := map[string]int{}
	m := newTestMaster(t, 1, func(w http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.URL.Path, "/events") {
			answer(w, http.StatusNotFound, `{"kind":"Status","apiVersion":"v1","status":"Failure","code":404}`)
			return
		}
		mu.Lock()
		calls[r.Method]++
		mu.Unlock()
		code := http.StatusOK
		if r.Method == http.MethodPost {
			code = http.StatusCreated
		}
		answer(w, code, `{"kind":"Event","apiVersion":"v1","metadata":{"name":"web-0.1","namespace":"default","resourceVersion":"3"}}`)
	})
	n := m.node(t)
	ref := &v1.ObjectReference{Kind: "Pod", Namespace: "default", Name: "web-0", UID: "u1", APIVersion: "v1"}
	for range 30 {
		n.event(ref, v1.EventTypeWarning, "BackOff", "Back-off restarting failed container")
	}
	counts := &m.fleet.events.counts
	deadline := time.Now().Add(10 * time.Second)
	for counts.sent.Load()+counts.filtered.Load() < 30 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if calls[http.MethodPost] != 1 || calls[http.MethodPatch] != 24 {
		t.Errorf("requests %v, want 1 POST and 24 PATCHes", calls)
	}
	got := counts.snapshot()
	want := map[string]int64{"recorded": 30, "sent": 25, "filtered": 5, "rejected": 0, "dropped": 0}
	for key, count := range want {
		if got[key] != count {
			t.Errorf("events %v, want %v", got, want)
			break
		}
	}
}

// Every event the fleet could not send is counted: a full queue, and the tries used up
// against a master that does not answer.
func TestEveryDropIsCounted(t *testing.T) {
	m := newTestMaster(t, 1, func(w http.ResponseWriter, _ *http.Request) {
		answer(w, http.StatusCreated, `{"kind":"Event","apiVersion":"v1","metadata":{"name":"e"}}`)
	})
	n := m.node(t)
	ref := n.nodeRef()

	full := &eventSender{log: m.fleet.counters, // no sender drains its queue
		shards: []*eventShard{{queue: make(chan pendingEvent, 10), correlators: map[string]*objectCorrelator{}}}}
	m.fleet.events = full
	queue := cap(full.shards[0].queue)
	for range queue + 3 {
		n.event(ref, v1.EventTypeNormal, "Starting", "Starting kubelet.")
	}
	if got := full.counts.dropped.Load(); got != 3 {
		t.Fatalf("dropped %d of %d events into a queue of %d, want 3", got, queue+3, queue)
	}

	m.server.Close() // no master: every try fails at the transport
	unreachable := startEventSender(context.Background(), 1, eventQueuePerNode, 0, m.fleet.counters)
	m.fleet.events = unreachable
	n.event(ref, v1.EventTypeNormal, "Starting", "Starting kubelet.")
	deadline := time.Now().Add(10 * time.Second)
	for unreachable.counts.dropped.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := unreachable.counts.snapshot(); got["dropped"] != 1 || got["sent"] != 0 {
		t.Fatalf("events %v, want the one dropped after its tries", got)
	}
	if errors := m.fleet.counters.responseSnapshot()["kubelet POST events error"]; errors != maxTriesPerEvent {
		t.Fatalf("%d POSTs without a response, want %d tries", errors, maxTriesPerEvent)
	}
}

// The config sets the Events a shard holds waiting, per node; 0 leaves no room at all,
// so an Event no sender is waiting for is dropped at once.
func TestEventQueueFollowsTheConfig(t *testing.T) {
	zero, five := 0, 5
	for _, c := range []struct {
		config     Config
		nodes, cap int
	}{{Config{}, 3, 3 * eventQueuePerNode}, {Config{EventQueuePerNode: &five}, 60, nodesPerEventShard * 5},
		{Config{EventQueuePerNode: &zero}, 3, 0}} {
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // no sender drains the queues
		s := startEventSender(ctx, c.nodes, c.config.eventQueue(), 0, newCounters())
		if got := cap(s.shards[0].queue); got != c.cap {
			t.Errorf("%d nodes, queue %v: a shard holds %d, want %d", c.nodes, c.config.EventQueuePerNode, got, c.cap)
		}
	}
}

// A correlator per involved object: a pod's goes a minute after the pod is forgotten
// (Events still queued for it find it), or after an hour without Events; a node's stays.
func TestCorrelatorsGoWithTheirPods(t *testing.T) {
	shard := &eventShard{correlators: map[string]*objectCorrelator{}}
	t0 := time.Now()
	pod := &v1.ObjectReference{Kind: "Pod", Namespace: "team", Name: "web-0", UID: "pod-uid"}
	idle := &v1.ObjectReference{Kind: "Pod", Namespace: "team", Name: "web-1", UID: "idle-uid"}
	node := &v1.ObjectReference{Kind: "Node", Name: "hollow-node-0", UID: "hollow-node-0"}
	first := shard.correlator(pod, t0)
	shard.correlator(idle, t0)
	shard.correlator(node, t0)
	if shard.correlator(pod, t0) != first {
		t.Fatal("a second Event of the pod got a correlator of its own")
	}
	shard.forget("pod-uid", t0)
	shard.sweep(t0.Add(forgottenGrace / 2))
	if len(shard.correlators) != 3 {
		t.Fatalf("%d correlators within the grace, want 3", len(shard.correlators))
	}
	shard.sweep(t0.Add(forgottenGrace + time.Second))
	if _, kept := shard.correlators["pod-uid"]; kept || len(shard.correlators) != 2 {
		t.Fatalf("correlators %v after the grace, want the forgotten pod's gone", shard.correlators)
	}
	shard.sweep(t0.Add(correlatorIdle + time.Second))
	if _, kept := shard.correlators["hollow-node-0"]; !kept || len(shard.correlators) != 1 {
		t.Fatalf("correlators %v after an idle hour, want the node's alone", shard.correlators)
	}
}
