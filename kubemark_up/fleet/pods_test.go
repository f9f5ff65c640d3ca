package main

import (
	"reflect"
	"testing"
)

func TestMissingAfterARelist(t *testing.T) {
	known := func(uids map[string]string) map[string]*podState {
		out := map[string]*podState{}
		for k, uid := range uids {
			out[k] = &podState{uid: uid}
		}
		return out
	}
	cases := []struct {
		name   string
		known  map[string]string
		listed map[string]string
		want   map[string]string
	}{
		{"all still there", map[string]string{"a/web-0": "u1", "a/web-1": "u2"},
			map[string]string{"a/web-0": "u1", "a/web-1": "u2"}, map[string]string{}},
		{"deleted while the watch was down", map[string]string{"a/web-0": "u1", "a/web-1": "u2"},
			map[string]string{"a/web-0": "u1"}, map[string]string{"a/web-1": "u2"}},
		{"recreated under its name: the old one is gone", map[string]string{"a/web-0": "u1"},
			map[string]string{"a/web-0": "u9"}, map[string]string{"a/web-0": "u1"}},
		{"new pods are not missing ones", map[string]string{}, map[string]string{"a/web-0": "u1"}, map[string]string{}},
		{"an empty relist: every pod is gone", map[string]string{"a/web-0": "u1", "b/web-0": "u3"},
			map[string]string{}, map[string]string{"a/web-0": "u1", "b/web-0": "u3"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := missing(known(c.known), c.listed); !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got %v, want %v", got, c.want)
			}
		})
	}
}
