package main

import (
	"context"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	corev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	restclient "k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"
	recordutil "k8s.io/client-go/tools/record/util"
	"k8s.io/klog/v2"
)

// The kubelet's events, with its recorder's semantics (client-go tools/record): core/v1
// Events named <object>.<hex nanoseconds>, source kubelet and the node; client-go's
// EventCorrelator aggregates similar events, counts repeats into PATCHes and
// rate-limits each (source, object) pair (burst 25, then one per 5 minutes); a write
// that fails for want of the server is retried up to 12 times, 10 s apart, the first
// wait randomised, as the broadcaster's sink does.
//
// What differs from a recorder per node, and why: a broadcaster per node holds two
// 1,000-event channels and three goroutines (some 80 KiB, a fifth of a node's memory
// budget), so nodes share a queue and a sender by shards of nodesPerEventShard. The
// correlator is one per involved object instead of one per kubelet: its aggregation,
// repeat counting and spam filter are all keyed by the object (and the source host,
// the node), so each object's correlator decides as the kubelet's would. What a
// kubelet's correlator keeps beyond that is its LRU of 4,096 keys, filled with pods
// long gone: kept by a thousand nodes under churn, that is some 4 KiB a pod, without
// end in sight (a 1,000-node soak at 2 pods a second grew the fleet by 1.1 MiB a
// minute). So a pod's correlator goes when the pod is forgotten (its UID never comes
// back), a minute later for Events still queued for it; one that names no live pod is
// dropped after correlatorIdle without Events. And where the broadcaster drops a full
// queue's events silently (watch.Broadcaster), every event the fleet could not send
// is counted: the status file's events.dropped, which `start` and the benchmark check.
const (
	nodesPerEventShard  = 25
	eventQueuePerNode   = 200
	maxTriesPerEvent    = 12               // tools/record's
	eventRetrySleep     = 10 * time.Second // tools/record's default sleep between tries
	lruEntriesPerObject = 64               // keys of one object's correlator: its reasons and messages
	forgottenGrace      = time.Minute      // Events still queued for a pod forgotten
	correlatorIdle      = time.Hour        // a pod's correlator with no Events for this long goes
	correlatorSweep     = time.Minute
)

type pendingEvent struct {
	client corev1.CoreV1Interface
	event  *v1.Event
}

type eventShard struct {
	queue chan pendingEvent
	mu    sync.Mutex // correlators: the sender's, and forget's from the pod watch
	// correlators by involved object (its UID, else kind/namespace/name).
	correlators map[string]*objectCorrelator
}

type objectCorrelator struct {
	*record.EventCorrelator
	pod       bool
	used      time.Time
	forgotten time.Time // the pod is gone: dropped forgottenGrace later
}

func objectKey(ref *v1.ObjectReference) string {
	if ref.UID != "" {
		return string(ref.UID)
	}
	return ref.Kind + "/" + ref.Namespace + "/" + ref.Name
}

// correlator is the object's correlator, made on its first Event.
func (shard *eventShard) correlator(ref *v1.ObjectReference, now time.Time) *objectCorrelator {
	shard.mu.Lock()
	defer shard.mu.Unlock()
	key := objectKey(ref)
	c := shard.correlators[key]
	if c == nil {
		c = &objectCorrelator{pod: ref.Kind == "Pod",
			EventCorrelator: record.NewEventCorrelatorWithOptions(record.CorrelatorOptions{LRUCacheSize: lruEntriesPerObject})}
		shard.correlators[key] = c
	}
	c.used = now
	return c
}

// forget marks a pod's correlator for dropping: the pod is gone from the API.
func (shard *eventShard) forget(uid string, now time.Time) {
	shard.mu.Lock()
	defer shard.mu.Unlock()
	if c := shard.correlators[uid]; c != nil {
		c.forgotten = now
	}
}

// sweep drops the correlators of pods forgotten a while ago, and of pods idle long.
func (shard *eventShard) sweep(now time.Time) {
	shard.mu.Lock()
	defer shard.mu.Unlock()
	for key, c := range shard.correlators {
		if !c.forgotten.IsZero() && now.Sub(c.forgotten) > forgottenGrace || c.pod && now.Sub(c.used) > correlatorIdle {
			delete(shard.correlators, key)
		}
	}
}

// eventCounts is the status file's events: recorded (handed to a shard), sent
// (created or patched), filtered (held back by the correlator's spam filter, as the
// kubelet's are), rejected (refused by the server, not retried, as the recorder
// does), dropped (a full queue, or the tries used up: lost for want of capacity or
// of the server).
type eventCounts struct {
	recorded, sent, filtered, rejected, dropped atomic.Int64
}

func (c *eventCounts) snapshot() map[string]int64 {
	return map[string]int64{"recorded": c.recorded.Load(), "sent": c.sent.Load(), "filtered": c.filtered.Load(),
		"rejected": c.rejected.Load(), "dropped": c.dropped.Load()}
}

type eventSender struct {
	shards []*eventShard
	counts eventCounts
	retry  time.Duration
	log    *counters // its rate-limited error lines
}

// eventQueue is the Events a shard holds waiting per node: the config's, else the default.
func (c Config) eventQueue() int {
	if c.EventQueuePerNode == nil {
		return eventQueuePerNode
	}
	return max(0, *c.EventQueuePerNode)
}

func newEventSender(ctx context.Context, nodes, queuePerNode int, log *counters) *eventSender {
	return startEventSender(ctx, nodes, queuePerNode, eventRetrySleep, log)
}

func startEventSender(ctx context.Context, nodes, queuePerNode int, retry time.Duration, log *counters) *eventSender {
	n := max(1, (nodes+nodesPerEventShard-1)/nodesPerEventShard)
	per := max(1, min(nodes, nodesPerEventShard))
	s := &eventSender{retry: retry, log: log}
	for range n {
		shard := &eventShard{queue: make(chan pendingEvent, per*queuePerNode), correlators: map[string]*objectCorrelator{}}
		s.shards = append(s.shards, shard)
		go s.send(ctx, shard)
	}
	return s
}

func (s *eventSender) send(ctx context.Context, shard *eventShard) {
	sweep := time.NewTicker(correlatorSweep)
	defer sweep.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-sweep.C:
			shard.sweep(now)
		case p := <-shard.queue:
			s.deliver(ctx, shard.correlator(&p.event.InvolvedObject, time.Now()), p)
		}
	}
}

// forget: a pod of node is gone, and its correlator with it.
func (s *eventSender) forget(node, uid string) {
	s.shardOf(node).forget(uid, time.Now())
}

// deliver is the broadcaster's recordToSink for one event.
func (s *eventSender) deliver(ctx context.Context, correlator *objectCorrelator, p pendingEvent) {
	result, err := correlator.EventCorrelate(p.event)
	if err != nil {
		utilruntime.HandleError(err)
	}
	if result.Skip {
		s.counts.filtered.Add(1)
		return
	}
	sink := &corev1.EventSinkImpl{Interface: p.client.Events("")}
	for tries := 1; ; tries++ {
		done, err := s.write(sink, result.Event, result.Patch, result.Event.Count > 1, correlator)
		if done {
			return
		}
		if tries >= maxTriesPerEvent || ctx.Err() != nil {
			s.drop("Unable to write event (retry limit exceeded!)", result.Event, err)
			return
		}
		delay := s.retry
		if tries == 1 { // randomised so that nodes do not retry in step after an outage
			delay = time.Duration(float64(delay) * rand.Float64())
		}
		select {
		case <-ctx.Done():
			s.drop("Unable to write event (fleet stopping)", result.Event, err)
			return
		case <-time.After(delay):
		}
	}
}

// write is the broadcaster's recordEvent: PATCH a repeated event (a new one if it is
// gone), POST a new one; done unless the server could not be reached.
func (s *eventSender) write(sink record.EventSink, event *v1.Event, patch []byte, update bool,
	correlator *objectCorrelator) (bool, error) {
	var written *v1.Event
	var err error
	if update {
		written, err = sink.Patch(event, patch)
	}
	if !update || recordutil.IsKeyNotFoundError(err) {
		event.ResourceVersion = ""
		written, err = sink.Create(event)
	}
	if err == nil {
		correlator.UpdateState(written)
		s.counts.sent.Add(1)
		return true, nil
	}
	switch err.(type) {
	case *restclient.RequestConstructionError, *errors.StatusError:
		// The recorder does not retry what the server refused or what cannot be built
		// (a namespace being deleted under churn): counted, and logged by the transport.
		s.counts.rejected.Add(1)
		return true, err
	}
	return false, err
}

func (s *eventSender) drop(why string, event *v1.Event, err error) {
	s.counts.dropped.Add(1)
	s.log.errorS(err, why, "node", event.Source.Host, "object", klog.KRef(event.InvolvedObject.Namespace,
		event.InvolvedObject.Name), "reason", event.Reason, "dropped", s.counts.dropped.Load())
}

func (s *eventSender) shardOf(node string) *eventShard {
	h := fnv.New32a()
	_, _ = h.Write([]byte(node))
	return s.shards[h.Sum32()%uint32(len(s.shards))]
}

// record queues one event of node about ref, as the recorder's makeEvent builds it.
func (s *eventSender) record(n *HollowNode, ref *v1.ObjectReference, kind, reason, format string, args ...any) {
	now := metav1.NewTime(time.Now())
	ns := ref.Namespace
	if ns == "" {
		ns = metav1.NamespaceDefault
	}
	event := &v1.Event{
		ObjectMeta:          metav1.ObjectMeta{Name: fmt.Sprintf("%v.%x", ref.Name, now.UnixNano()), Namespace: ns},
		InvolvedObject:      *ref,
		Reason:              reason,
		Message:             fmt.Sprintf(format, args...),
		FirstTimestamp:      now,
		LastTimestamp:       now,
		Count:               1,
		Type:                kind,
		Source:              v1.EventSource{Component: "kubelet", Host: n.name()},
		ReportingController: "kubelet",
		ReportingInstance:   n.name(),
	}
	s.counts.recorded.Add(1)
	select {
	case s.shardOf(n.name()).queue <- pendingEvent{client: n.kube.CoreV1(), event: event}:
	default:
		s.drop("Unable to record event: too many queued events, dropped event", event, nil)
	}
}
