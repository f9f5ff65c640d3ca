package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer/streaming"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/scheme"
	restwatch "k8s.io/client-go/rest/watch"
)

func TestOptions(t *testing.T) {
	s := &stream{fieldSelector: "spec.nodeName=hollow-node-0", labelSelector: "!service.kubernetes.io/headless"}
	cases := []struct {
		name          string
		rv            string
		synced        bool
		initialEvents bool
	}{
		{"first: the initial state as a streaming list", "", false, true},
		{"cut short in its initial state: the initial state, not older than what was seen", "41", false, true},
		{"synced: a watch from the last resourceVersion", "42", true, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := s.options(c.rv, c.synced, 321)
			if !got.Watch || !got.AllowWatchBookmarks || *got.TimeoutSeconds != 321 || got.ResourceVersion != c.rv ||
				got.FieldSelector != s.fieldSelector || got.LabelSelector != s.labelSelector {
				t.Fatalf("options %+v", got)
			}
			initial := got.SendInitialEvents != nil && *got.SendInitialEvents
			if initial != c.initialEvents ||
				(got.ResourceVersionMatch == metav1.ResourceVersionMatchNotOlderThan) != c.initialEvents {
				t.Fatalf("sendInitialEvents %v, resourceVersionMatch %q", got.SendInitialEvents, got.ResourceVersionMatch)
			}
		})
	}
}

func TestAfter(t *testing.T) {
	pods := schema.GroupResource{Resource: "pods"}
	cases := []struct {
		name string
		err  error
		want next
	}{
		{"the server's timeout ended the watch", nil, resume},
		{"410 Expired: too old a resourceVersion", apierrors.NewResourceExpired("too old resource version: 1 (40)"), relist},
		{"410 Gone", apierrors.NewGone("gone"), relist},
		{"500", apierrors.NewInternalError(errors.New("etcd is down")), retry},
		{"429", apierrors.NewTooManyRequests("slow down", 1), retry},
		{"403", apierrors.NewForbidden(pods, "", errors.New("no")), retry},
		{"no connection", errors.New("dial tcp 127.0.0.1:6443: connect: connection refused"), retry},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := after(c.err); got != c.want {
				t.Fatalf("after = %v, want %v", got, c.want)
			}
		})
	}
}

// reply is what the fake master answers one watch request with: a status other than
// 200 (with its Status as JSON), or these events, then the end of the stream.
type reply struct {
	code   int32
	events []watch.Event
}

// fakeMaster answers a stream's requests from its replies, in turn, over no network;
// past the last it ends the test's context, which ends follow.
type fakeMaster struct {
	replies []reply
	queries []url.Values
	end     context.CancelFunc
}

func (m *fakeMaster) RoundTrip(req *http.Request) (*http.Response, error) {
	m.queries = append(m.queries, req.URL.Query())
	if len(m.queries) > len(m.replies) {
		m.end()
		return nil, context.Canceled
	}
	r := m.replies[len(m.queries)-1]
	if r.code != 0 {
		status := apierrors.FromObject(&metav1.Status{Status: metav1.StatusFailure, Code: r.code,
			Reason: reasons[r.code]}).(*apierrors.StatusError).ErrStatus
		status.Kind, status.APIVersion = "Status", "v1"
		body, _ := json.Marshal(status)
		return &http.Response{StatusCode: int(r.code), Header: http.Header{"Content-Type": {"application/json"}},
			Body: io.NopCloser(bytes.NewReader(body)), Request: req}, nil
	}
	var body bytes.Buffer
	embedded := scheme.Codecs.EncoderForVersion(protobufStream.Serializer, v1.SchemeGroupVersion)
	encoder := restwatch.NewEncoder(streaming.NewEncoder(protobufStream.StreamSerializer.Framer.NewFrameWriter(&body),
		protobufStream.StreamSerializer.Serializer), embedded)
	for i := range r.events {
		if err := encoder.Encode(&r.events[i]); err != nil {
			return nil, err
		}
	}
	return &http.Response{StatusCode: http.StatusOK,
		Header: http.Header{"Content-Type": {"application/vnd.kubernetes.protobuf;stream=watch"}},
		Body:   io.NopCloser(&body), Request: req}, nil
}

var reasons = map[int32]metav1.StatusReason{410: metav1.StatusReasonExpired, 500: metav1.StatusReasonInternalError}

func pod(kind watch.EventType, name string, rv int) watch.Event {
	return watch.Event{Type: kind, Object: &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: name,
		ResourceVersion: strconv.Itoa(rv)}}}
}

func bookmark(rv int, initialEnd bool) watch.Event {
	meta := metav1.ObjectMeta{ResourceVersion: strconv.Itoa(rv)}
	if initialEnd {
		meta.Annotations = map[string]string{metav1.InitialEventsAnnotationKey: "true"}
	}
	return watch.Event{Type: watch.Bookmark, Object: &v1.Pod{ObjectMeta: meta}}
}

func failure(code int32) watch.Event {
	return watch.Event{Type: watch.Error, Object: &metav1.Status{Status: metav1.StatusFailure, Code: code,
		Reason: reasons[code], Message: "test"}}
}

// TestFollowResumesAndRelists drives the watch loop against a fake master: each case
// is the replies to its watches, and what follow must ask for next (the last request
// is the one that ends the case), hand to its handlers, and count.
func TestFollowResumesAndRelists(t *testing.T) {
	const (
		initialState = "rv= sendInitialEvents=true match=NotOlderThan"
		from         = "rv=%d sendInitialEvents= match="
	)
	cases := []struct {
		name     string
		replies  []reply
		requests []string
		seen     []string
		synced   int
		events   int64
	}{
		{
			name: "after the server's timeout: on from the last resourceVersion, a bookmark's included",
			replies: []reply{
				{events: []watch.Event{pod(watch.Added, "web-0", 10), pod(watch.Added, "web-1", 11), bookmark(12, true),
					pod(watch.Modified, "web-0", 13), bookmark(15, false)}},
				{events: []watch.Event{pod(watch.Deleted, "web-1", 16)}},
				{},
			},
			requests: []string{initialState, fmt.Sprintf(from, 15), fmt.Sprintf(from, 16), fmt.Sprintf(from, 16)},
			seen:     []string{"ADDED web-0 initial", "ADDED web-1 initial", "MODIFIED web-0", "DELETED web-1"},
			synced:   1, events: 2,
		},
		{
			name: "410 in the watch: the whole initial state again",
			replies: []reply{
				{events: []watch.Event{pod(watch.Added, "web-0", 10), bookmark(12, true)}},
				{events: []watch.Event{failure(410)}},
				{events: []watch.Event{pod(watch.Added, "web-0", 20), bookmark(21, true)}},
			},
			requests: []string{initialState, fmt.Sprintf(from, 12), initialState, fmt.Sprintf(from, 21)},
			seen:     []string{"ADDED web-0 initial", "ADDED web-0 initial"},
			synced:   2,
		},
		{
			name: "410 as the answer to the watch: the whole initial state again",
			replies: []reply{
				{events: []watch.Event{pod(watch.Added, "web-0", 10), bookmark(12, true)}},
				{code: 410},
			},
			requests: []string{initialState, fmt.Sprintf(from, 12), initialState},
			seen:     []string{"ADDED web-0 initial"},
			synced:   1,
		},
		{
			name:     "cut short in its initial state: the initial state again, not older than what was seen",
			replies:  []reply{{events: []watch.Event{pod(watch.Added, "web-0", 10)}}},
			requests: []string{initialState, "rv=10 sendInitialEvents=true match=NotOlderThan"},
			seen:     []string{"ADDED web-0 initial"},
		},
		{
			name: "any other failure: on from the last resourceVersion after a back-off, no relist",
			replies: []reply{
				{events: []watch.Event{pod(watch.Added, "web-0", 10), bookmark(12, true)}},
				{events: []watch.Event{pod(watch.Modified, "web-0", 13), failure(500)}},
			},
			requests: []string{initialState, fmt.Sprintf(from, 12), fmt.Sprintf(from, 13)},
			seen:     []string{"ADDED web-0 initial", "MODIFIED web-0"},
			synced:   1, events: 1,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			master := &fakeMaster{replies: c.replies, end: cancel}
			fleet := &Fleet{config: Config{Server: "https://master.invalid:6443"}}
			core, err := newClients(fleet.restConfig("test", -1, 0), master, 0, "core")
			if err != nil {
				t.Fatal(err)
			}
			var seen []string
			synced := 0
			events := &atomic.Int64{}
			s := &stream{client: core.CoreV1().RESTClient(), resource: "pods", fieldSelector: "spec.nodeName=n",
				events: events, synced: func() { synced++ },
				on: func(kind watch.EventType, obj runtime.Object, initial bool) {
					line := fmt.Sprintf("%s %s", kind, obj.(*v1.Pod).Name)
					if initial {
						line += " initial"
					}
					seen = append(seen, line)
				}}
			s.follow(ctx)
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				t.Fatal("follow did not ask again")
			}
			var requests []string
			for _, q := range master.queries {
				timeout, _ := strconv.Atoi(q.Get("timeoutSeconds"))
				if q.Get("watch") != "true" || q.Get("allowWatchBookmarks") != "true" || timeout < 300 || timeout >= 600 ||
					q.Get("fieldSelector") != "spec.nodeName=n" {
					t.Fatalf("not a reflector's watch: %v", q)
				}
				requests = append(requests, fmt.Sprintf("rv=%s sendInitialEvents=%s match=%s", q.Get("resourceVersion"),
					q.Get("sendInitialEvents"), q.Get("resourceVersionMatch")))
			}
			if !reflect.DeepEqual(requests, c.requests) {
				t.Fatalf("requests\n got %q\nwant %q", requests, c.requests)
			}
			if !reflect.DeepEqual(seen, c.seen) {
				t.Fatalf("handled %q, want %q", seen, c.seen)
			}
			if synced != c.synced || events.Load() != c.events {
				t.Fatalf("synced %d times, %d events counted; want %d, %d", synced, events.Load(), c.synced, c.events)
			}
		})
	}
}
