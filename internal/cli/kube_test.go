package cli

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestKubeFlagsWithoutAnyKubeconfig(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("HOME", dir)
	t.Setenv("KUBECONFIG", filepath.Join(dir, "missing"))
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
	_, _, err := (&KubeFlags{}).Config()
	if err == nil {
		t.Fatal("Config() found a cluster with no kubeconfig anywhere")
	}
	if msg := err.Error(); strings.Contains(msg, "KUBERNETES_MASTER") || !strings.Contains(msg, "--kubeconfig") {
		t.Fatalf("error = %q, want one naming --kubeconfig and not KUBERNETES_MASTER", msg)
	}
}
