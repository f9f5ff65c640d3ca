package main

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
		options := metav1.ListOptions{FieldSelector: s.fieldSelector, LabelSelector: s.labelSelector, Watch: true,
			AllowWatchBookmarks: true, TimeoutSeconds: &timeout, ResourceVersion: rv}
		if !synced {
			options.SendInitialEvents = ptr.To(true)
			options.ResourceVersionMatch = metav1.ResourceVersionMatchNotOlderThan
		}
		began := time.Now()
		err := s.watchOnce(ctx, &options, &rv, &synced)
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			continue // the server ended the watch at its timeout: resume from rv
		case apierrors.IsResourceExpired(err) || apierrors.IsGone(err):
			rv, synced = "", false // relist
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
