package main

// A pod's projected service account token: the token manager's TokenRequest and its
// refresh.

import (
	"context"
	"math/rand/v2"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
)

const (
	tokenSeconds = 3607 // the projected token's requested TTL (WarnOnlyBoundTokenExpirationSeconds)
)

func wantsToken(pod *v1.Pod) bool {
	for _, vol := range pod.Spec.Volumes {
		if vol.Projected == nil {
			continue
		}
		for _, src := range vol.Projected.Sources {
			if src.ServiceAccountToken != nil {
				return true
			}
		}
	}
	return false
}

// requestToken posts the TokenRequest of the projected token and schedules its refresh
// (at 80 % of its life, less up to 10 s), as the kubelet's token manager does; no
// lock is held across the request.
func (t *podTable) requestToken(ctx context.Context, pod *v1.Pod, state *podState) {
	n := t.node
	account := pod.Spec.ServiceAccountName
	if account == "" {
		account = "default"
	}
	_, err := n.kube.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, account, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			ExpirationSeconds: ptr.To[int64](tokenSeconds),
			BoundObjectRef:    &authenticationv1.BoundObjectReference{APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		klog.V(2).InfoS("token request failed", "pod", key(pod), "err", err)
	}
	refresh := time.Duration(0.8*tokenSeconds*float64(time.Second)) - time.Duration(rand.Float64()*10*float64(time.Second))
	state.mu.Lock()
	defer state.mu.Unlock()
	if state.gone || state.deleting || state.step >= stepEnded || ctx.Err() != nil {
		return
	}
	state.token = time.AfterFunc(refresh, func() {
		state.mu.Lock()
		live := !state.gone && !state.deleting && state.step < stepEnded
		state.mu.Unlock()
		if live && ctx.Err() == nil {
			t.requestToken(ctx, pod, state)
		}
	})
}
