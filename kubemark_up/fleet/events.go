package main

import (
	"context"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
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
// budget), so nodes share a correlator and a sender by shards of nodesPerEventShard.
// The correlator's keys hold the event's source host, the node, so aggregation and
// the spam filter still work per node and object as each kubelet's own correlator
// does. Its caches (bounded LRUs, filled only as objects get events) hold
// lruEntriesPerNode a node where a kubelet's hold 4,096: enough for every event key of
// a full node's live pods (110 pods, a handful of reasons each), so that what is
// aggregated and filtered among live objects is the kubelet's; what a kubelet would
// keep beyond that is pods long gone, memory a thousand nodes after a churn cannot
// spare. And where the broadcaster drops a full queue's events silently
// (watch.Broadcaster), every event the fleet could not send is counted: the status
// file's events.dropped, which `start` and the benchmark check.
const (
	nodesPerEventShard = 25
	eventQueuePerNode  = 200
	maxTriesPerEvent   = 12               // tools/record's
	eventRetrySleep    = 10 * time.Second // tools/record's default sleep between tries
	lruEntriesPerNode  = 1024
)

type pendingEvent struct {
	client corev1.CoreV1Interface
	event  *v1.Event
}

type eventShard struct {
	queue      chan pendingEvent
	correlator *record.EventCorrelator
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
		shard := &eventShard{queue: make(chan pendingEvent, per*queuePerNode),
			correlator: record.NewEventCorrelatorWithOptions(record.CorrelatorOptions{LRUCacheSize: per * lruEntriesPerNode})}
		s.shards = append(s.shards, shard)
		go s.send(ctx, shard)
	}
	return s
}

func (s *eventSender) send(ctx context.Context, shard *eventShard) {
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-shard.queue:
			s.deliver(ctx, shard.correlator, p)
		}
	}
}

// deliver is the broadcaster's recordToSink for one event.
func (s *eventSender) deliver(ctx context.Context, correlator *record.EventCorrelator, p pendingEvent) {
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
	correlator *record.EventCorrelator) (bool, error) {
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
