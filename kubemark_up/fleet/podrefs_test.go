package main

import (
	"reflect"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestReferences(t *testing.T) {
	token := v1.Volume{Name: "kube-api-access", VolumeSource: v1.VolumeSource{Projected: &v1.ProjectedVolumeSource{
		Sources: []v1.VolumeProjection{
			{ServiceAccountToken: &v1.ServiceAccountTokenProjection{Path: "token"}},
			{ConfigMap: &v1.ConfigMapProjection{LocalObjectReference: v1.LocalObjectReference{Name: "kube-root-ca.crt"}}},
		}}}}
	configMapVolume := func(name string) v1.Volume {
		return v1.Volume{Name: name, VolumeSource: v1.VolumeSource{ConfigMap: &v1.ConfigMapVolumeSource{
			LocalObjectReference: v1.LocalObjectReference{Name: name}}}}
	}
	secretVolume := func(name string) v1.Volume {
		return v1.Volume{Name: "s", VolumeSource: v1.VolumeSource{Secret: &v1.SecretVolumeSource{SecretName: name}}}
	}
	envFrom := func(resource, name string) v1.EnvVar {
		ref := v1.LocalObjectReference{Name: name}
		if resource == "configmaps" {
			return v1.EnvVar{Name: "A", ValueFrom: &v1.EnvVarSource{ConfigMapKeyRef: &v1.ConfigMapKeySelector{LocalObjectReference: ref, Key: "k"}}}
		}
		return v1.EnvVar{Name: "B", ValueFrom: &v1.EnvVarSource{SecretKeyRef: &v1.SecretKeySelector{LocalObjectReference: ref, Key: "k"}}}
	}
	cases := []struct {
		name string
		spec v1.PodSpec
		want []string
	}{
		{"nothing named", v1.PodSpec{Containers: []v1.Container{{Name: "c", Env: []v1.EnvVar{{Name: "X", Value: "1"}}}}}, nil},
		{"the projected token volume: kube-root-ca.crt", v1.PodSpec{Volumes: []v1.Volume{token}},
			[]string{"configmaps/kube-root-ca.crt"}},
		{"volumes, init and app containers' env and envFrom, then pull secrets, each once",
			v1.PodSpec{
				Volumes: []v1.Volume{configMapVolume("config"), secretVolume("tls"), token,
					{Name: "p", VolumeSource: v1.VolumeSource{Projected: &v1.ProjectedVolumeSource{Sources: []v1.VolumeProjection{
						{Secret: &v1.SecretProjection{LocalObjectReference: v1.LocalObjectReference{Name: "projected-secret"}}},
						{ConfigMap: &v1.ConfigMapProjection{LocalObjectReference: v1.LocalObjectReference{Name: "config"}}},
					}}}}},
				InitContainers: []v1.Container{{Name: "init", Env: []v1.EnvVar{envFrom("secrets", "init-secret")}}},
				Containers: []v1.Container{{Name: "app", Env: []v1.EnvVar{envFrom("configmaps", "settings"), envFrom("secrets", "tls")},
					EnvFrom: []v1.EnvFromSource{
						{ConfigMapRef: &v1.ConfigMapEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "env"}}},
						{SecretRef: &v1.SecretEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "env"}}},
					}}},
				ImagePullSecrets: []v1.LocalObjectReference{{Name: "registry"}, {Name: "tls"}},
			},
			[]string{"configmaps/config", "secrets/tls", "configmaps/kube-root-ca.crt", "secrets/projected-secret",
				"secrets/init-secret", "configmaps/settings", "configmaps/env", "secrets/env", "secrets/registry"}},
		{"a reference without a name is none", v1.PodSpec{Volumes: []v1.Volume{secretVolume("")},
			ImagePullSecrets: []v1.LocalObjectReference{{Name: ""}}}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "web-0"}, Spec: c.spec}
			var got []string
			for _, ref := range references(pod) {
				if ref.namespace != "team" {
					t.Fatalf("%v: a pod refers to objects of its own namespace", ref)
				}
				got = append(got, ref.resource+"/"+ref.name)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got %v, want %v", got, c.want)
			}
		})
	}
}
