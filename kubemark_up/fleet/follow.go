package main

// The watches of a hollow node: one goroutine per resource, sending the requests
// client-go's reflector sends, and handing what the node keeps to its handlers.

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/streaming"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	restwatch "k8s.io/client-go/rest/watch"
	"k8s.io/utils/ptr"
)

const minWatchTimeout = 5 * time.Minute // client-go's reflector: each watch lives U[5, 10) minutes

var protobufStream = func() runtime.SerializerInfo {
	info, ok := runtime.SerializerInfoForMediaType(scheme.Codecs.SupportedMediaTypes(), runtime.ContentTypeProtobuf)
	if !ok || info.StreamSerializer == nil {
		panic("no protobuf stream serializer")
	}
	return info
}()

// stream is one of a node's reflectors: a resource (in a namespace, with selectors),
// the counter of its events after the initial state, and, for what the node keeps
// (its Node, its pods), the handler of every object and of the end of each initial
// state.
type stream struct {
	client                       rest.Interface
	resource, namespace          string
	fieldSelector, labelSelector string
	events                       *atomic.Int64
	// Every object: the initial state's (initial true, as ADDED) and each event after it.
	on func(kind watch.EventType, obj runtime.Object, initial bool)
	// The initial state is complete (what it did not hold is gone).
	synced func()
}

// follow sends the requests client-go's v1.36 reflector sends, in one goroutine
// instead of an informer's four or five: the initial state as a streaming list (WATCH
// with sendInitialEvents, ended by the k8s.io/initial-events-end bookmark), the same
// watch read on; then watches resumed from the last resourceVersion seen (bookmarks
// included), each with timeoutSeconds drawn from [300, 600) s; the whole again only on
// 410 Gone; back-off 0.8 s to 30 s on errors.
func (s *stream) follow(ctx context.Context) {
	rv, synced := "", false
	backoff := 800 * time.Millisecond
	for ctx.Err() == nil {
		timeout := int64(minWatchTimeout.Seconds() * (1 + rand.Float64()))
		options := s.options(rv, synced, timeout)
		began := time.Now()
		err := s.watchOnce(ctx, &options, &rv, &synced)
		if ctx.Err() != nil {
			return
		}
		switch after(err) {
		case resume:
			continue
		case relist:
			rv, synced = "", false
			continue
		}
		if time.Since(began) > 2*time.Minute {
			backoff = 800 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff + time.Duration(rand.Float64()*float64(backoff))):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// options is the next watch's request: the initial state as a streaming list until it
// is complete, a plain watch from rv after that.
func (s *stream) options(rv string, synced bool, timeout int64) metav1.ListOptions {
	options := metav1.ListOptions{FieldSelector: s.fieldSelector, LabelSelector: s.labelSelector, Watch: true,
		AllowWatchBookmarks: true, TimeoutSeconds: &timeout, ResourceVersion: rv}
	if !synced {
		options.SendInitialEvents = ptr.To(true)
		options.ResourceVersionMatch = metav1.ResourceVersionMatchNotOlderThan
	}
	return options
}

// next is what follow does once a watch has ended.
type next int

const (
	resume next = iota // the server ended the watch at its timeout: on from rv, at once
	relist             // 410 Gone: rv is too old, so the whole initial state again
	retry              // any other failure: on from rv, after a back-off
)

// after is the reflector's choice for a watch that ended with err.
func after(err error) next {
	switch {
	case err == nil:
		return resume
	case apierrors.IsResourceExpired(err) || apierrors.IsGone(err):
		return relist
	}
	return retry
}

// watchOnce reads one watch to its end, keeping rv (the last resourceVersion seen,
// bookmarks included) and synced (the initial state is complete) up to date.
func (s *stream) watchOnce(ctx context.Context, options *metav1.ListOptions, rv *string, synced *bool) error {
	request := s.client.Get().Resource(s.resource).VersionedParams(options, scheme.ParameterCodec)
	if s.namespace != "" {
		request = request.Namespace(s.namespace)
	}
	body, err := request.Stream(ctx)
	if err != nil {
		return err
	}
	defer body.Close()
	frames := protobufStream.StreamSerializer.Framer.NewFrameReader(body)
	decoder := restwatch.NewDecoder(streaming.NewDecoder(frames, protobufStream.StreamSerializer.Serializer),
		scheme.Codecs.UniversalDeserializer())
	for {
		kind, obj, err := decoder.Decode()
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil
			}
			return err
		}
		if kind == watch.Error {
			if status, ok := obj.(*metav1.Status); ok {
				return &apierrors.StatusError{ErrStatus: *status}
			}
			return apierrors.NewInternalError(errors.New("watch error"))
		}
		accessor, err := meta.Accessor(obj)
		if err != nil {
			continue
		}
		*rv = accessor.GetResourceVersion()
		if kind == watch.Bookmark {
			if !*synced && accessor.GetAnnotations()[metav1.InitialEventsAnnotationKey] == "true" {
				*synced = true
				if s.synced != nil {
					s.synced()
				}
			}
			continue
		}
		if *synced && s.events != nil {
			s.events.Add(1)
		}
		if s.on != nil {
			s.on(kind, obj, !*synced)
		}
	}
}

// nameSelector is the field selector of one object by name, as the kubelet's node
// lister and its per-object ConfigMap and Secret watches use.
func nameSelector(name string) string {
	return fields.OneTermEqualSelector("metadata.name", name).String()
}
