package main

import (
	"context"
	"fmt"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/klog/v2"
)

// The kubelet's events go out as its event recorder sends them (client-go
// tools/record: core/v1 Events named <object>.<hex nanoseconds>, source kubelet and the
// node, count 1), each through the node's own client. One queue and a few senders
// serve the whole fleet: a recorder per node holds a 1,000-event channel and two
// goroutines, which a thousand nodes cannot afford. Like the recorder, a full queue
// drops the event rather than block the node.
const (
	eventQueue   = 20000
	eventSenders = 8
)

type pendingEvent struct {
	client corev1.CoreV1Interface
	event  *v1.Event
}

type eventSender struct {
	queue   chan pendingEvent
	dropped *counters
}

func newEventSender(ctx context.Context, c *counters) *eventSender {
	s := &eventSender{queue: make(chan pendingEvent, eventQueue), dropped: c}
	for range eventSenders {
		go s.send(ctx)
	}
	return s
}

func (s *eventSender) send(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-s.queue:
			ns := p.event.Namespace
			if _, err := p.client.Events(ns).Create(ctx, p.event, metav1.CreateOptions{}); err != nil && ctx.Err() == nil {
				klog.V(2).InfoS("event not sent", "reason", p.event.Reason, "err", err)
			}
		}
	}
}

// record queues one event of node about ref.
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
	select {
	case s.queue <- pendingEvent{client: n.kube.CoreV1(), event: event}:
	default:
		s.dropped.add("kubelet dropped events")
	}
}
