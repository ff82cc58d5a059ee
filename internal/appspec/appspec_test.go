package appspec

import (
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kusttypes "sigs.k8s.io/kustomize/api/types"

	"converge.dev/converge/api/v1alpha1"
)

func TestRenderOptions_WhatAnApplicationMeans(t *testing.T) {
	app := &v1alpha1.Application{ObjectMeta: metav1.ObjectMeta{Name: "shop", Namespace: "team"},
		Spec: v1alpha1.ApplicationSpec{Source: v1alpha1.ApplicationSource{RepoURL: "https://x/y", Path: "/charts/shop",
			Helm: &v1alpha1.HelmSource{Values: &apiextensionsv1.JSON{Raw: []byte(`{"replicas":3}`)}}}}}
	opts, err := RenderOptions(app, "/checkout")
	if err != nil {
		t.Fatal(err)
	}
	// The release is named for the Application (as in push mode's --app),
	// lives in its destination, and the path is relative to the root.
	if opts.Path != "charts/shop" || opts.Helm.ReleaseName != "shop" || opts.Helm.Namespace != "team" || opts.Helm.Values["replicas"] != float64(3) {
		t.Errorf("opts = %+v", opts)
	}
	app.Spec.Destination.Namespace = "prod"
	if got := Destination(app); got != "prod" {
		t.Errorf("Destination = %q, want prod", got)
	}
	app.Spec.Source.Helm.Values.Raw = []byte(`[1`)
	if _, err := RenderOptions(app, "/checkout"); err == nil || !strings.Contains(err.Error(), "spec.source.helm.values") {
		t.Errorf("error = %v, want one naming spec.source.helm.values", err)
	}
}

func TestParseImage_AsKustomizeEditSetImageTakesIt(t *testing.T) {
	for in, want := range map[string]kusttypes.Image{
		"nginx:1.27": {Name: "nginx", NewTag: "1.27"},
		"nginx=registry.example.com:5000/nginx:1.27": {Name: "nginx", NewName: "registry.example.com:5000/nginx", NewTag: "1.27"},
		"app@sha256:abc":                    {Name: "app", Digest: "sha256:abc"},
		"app=ghcr.io/org/app:v2@sha256:abc": {Name: "app", NewName: "ghcr.io/org/app", NewTag: "v2", Digest: "sha256:abc"},
		"registry.example.com:5000/nginx":   {Name: "registry.example.com:5000/nginx"},
	} {
		got, err := parseImage(in)
		if err != nil || got != want {
			t.Errorf("parseImage(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "=x", "app@nodigest", "a b:1"} {
		if _, err := parseImage(bad); err == nil {
			t.Errorf("parseImage(%q) accepted", bad)
		}
	}
}

func TestDockerConfigAuth_FluxRegistrySecrets(t *testing.T) {
	cfg := []byte(`{"auths":{"registry.example.com":{"auth":"Ym90OnB3"},"https://ghcr.io":{"username":"u","password":"p"}}}`)
	for url, want := range map[string][2]string{
		"oci://registry.example.com/org/app": {"bot", "pw"},
		"oci://ghcr.io/org/app":              {"u", "p"},
	} {
		user, pass, err := dockerConfigAuth(cfg, url)
		if err != nil || user != want[0] || pass != want[1] {
			t.Errorf("%s: %q %q %v", url, user, pass, err)
		}
	}
	if _, _, err := dockerConfigAuth(cfg, "oci://other.example.com/x"); err == nil || strings.Contains(err.Error(), "Ym90") {
		t.Errorf("no credentials for the host: %v", err)
	}
}
