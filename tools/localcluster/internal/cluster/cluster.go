// Package cluster runs a real Kubernetes control plane on loopback for tests
// and demos: etcd, kube-apiserver, kube-controller-manager and kube-scheduler
// built from source, with kwok standing in for kubelets on fake nodes.
//
// All state lives in one directory (certificates, etcd data, logs, pid files,
// the audit log and the admin kubeconfig); binaries live in a shared cache.
package cluster

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Cluster is a local cluster rooted at Dir.
type Cluster struct {
	// Dir holds all state: pki/, etcd/, logs/, run/, audit.log, kubeconfig.
	Dir string
	// CacheDir is the binary cache shared by every checkout.
	CacheDir string
	// Log receives progress for people.
	Log io.Writer
	// Name tells instances apart: "a" (the default) uses the base ports,
	// "b" the next set, and so on; it names the kubeconfig's context.
	Name string

	binDir string
}

// New returns a cluster for the state directory dir, with binaries cached in
// cacheDir. Both are made absolute and free of symlinks, since processes are
// recognised by them.
func New(dir, cacheDir, name string, log io.Writer) (*Cluster, error) {
	if name == "" {
		name = "a"
	}
	if len(name) != 1 || name[0] < 'a' || name[0] > 'j' {
		return nil, fmt.Errorf("cluster name %q: want one letter from a to j", name)
	}
	dir, err := canonical(dir)
	if err != nil {
		return nil, err
	}
	if cacheDir, err = canonical(cacheDir); err != nil {
		return nil, err
	}
	return &Cluster{Dir: dir, CacheDir: cacheDir, Log: log, Name: name}, nil
}

// canonical makes p absolute and resolves symlinks in its longest existing
// prefix, without creating anything.
func canonical(p string) (string, error) {
	p, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	var rest []string
	for cur := p; ; cur = filepath.Dir(cur) {
		if real, err := filepath.EvalSymlinks(cur); err == nil {
			return filepath.Join(append([]string{real}, rest...)...), nil
		}
		if cur == filepath.Dir(cur) {
			return p, nil
		}
		rest = append([]string{filepath.Base(cur)}, rest...)
	}
}

func (c *Cluster) path(elem ...string) string {
	return filepath.Join(append([]string{c.Dir}, elem...)...)
}

// KubeconfigPath is the admin kubeconfig written by Up.
func (c *Cluster) KubeconfigPath() string { return c.path("kubeconfig") }

// AuditLogPath is the apiserver's audit log: one JSON event per request.
func (c *Cluster) AuditLogPath() string { return c.path("audit.log") }

func (c *Cluster) apiserverURL() string { return "https://127.0.0.1:" + c.port(apiserverPort) }

// port is base moved to this instance's set of ports.
func (c *Cluster) port(base int) string {
	return strconv.Itoa(base + int(c.Name[0]-'a')*portStride)
}

// contextName is the kubeconfig context (and cluster) name.
func (c *Cluster) contextName() string {
	if c.Name == "a" {
		return "converge-local"
	}
	return "converge-local-" + c.Name
}

func (c *Cluster) components() []component {
	pki := func(f string) string { return c.path("pki", f) }
	kubeconfig := func(name string) string { return c.path("kubeconfigs", name+".yaml") }
	return []component{{
		name: "etcd", bin: "etcd",
		args: []string{
			"--name=converge-local",
			"--data-dir=" + c.path("etcd"),
			"--listen-client-urls=http://127.0.0.1:" + c.port(etcdClientPort),
			"--advertise-client-urls=http://127.0.0.1:" + c.port(etcdClientPort),
			"--listen-peer-urls=http://127.0.0.1:" + c.port(etcdPeerPort),
			"--initial-advertise-peer-urls=http://127.0.0.1:" + c.port(etcdPeerPort),
			"--initial-cluster=converge-local=http://127.0.0.1:" + c.port(etcdPeerPort),
			"--quota-backend-bytes=8589934592",
			"--unsafe-no-fsync",
			"--log-level=warn",
		},
	}, {
		name: "kube-apiserver", bin: "kube-apiserver",
		args: []string{
			"--etcd-servers=http://127.0.0.1:" + c.port(etcdClientPort),
			"--bind-address=127.0.0.1",
			"--advertise-address=127.0.0.1",
			// A loopback advertise address is refused by the endpoint reconciler;
			// nothing in the local cluster routes to the kubernetes Service anyway.
			"--endpoint-reconciler-type=none",
			"--secure-port=" + c.port(apiserverPort),
			"--tls-cert-file=" + pki("apiserver.crt"),
			"--tls-private-key-file=" + pki("apiserver.key"),
			"--client-ca-file=" + pki("ca.crt"),
			"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
			"--service-account-key-file=" + pki("sa.pub"),
			"--service-account-signing-key-file=" + pki("sa.key"),
			"--service-cluster-ip-range=" + serviceCIDR,
			"--authorization-mode=RBAC",
			"--authentication-config=" + c.path("authentication-config.yaml"),
			// kwok serves the kubelet API (logs) at the nodes' InternalIP.
			"--kubelet-preferred-address-types=InternalIP",
			"--kubelet-client-certificate=" + pki("admin.crt"),
			"--kubelet-client-key=" + pki("admin.key"),
			"--allow-privileged=true",
			"--audit-policy-file=" + c.path("audit-policy.yaml"),
			"--audit-log-path=" + c.AuditLogPath(),
			"--audit-log-format=json",
			"--audit-log-mode=blocking",
			"--audit-log-maxsize=0",
			"--audit-log-maxbackup=0",
			"--v=0",
		},
	}, {
		name: "kube-controller-manager", bin: "kube-controller-manager",
		args: []string{
			"--kubeconfig=" + kubeconfig("kube-controller-manager"),
			"--authentication-kubeconfig=" + kubeconfig("kube-controller-manager"),
			"--authorization-kubeconfig=" + kubeconfig("kube-controller-manager"),
			"--bind-address=127.0.0.1",
			"--secure-port=" + c.port(controllerMgrPort),
			"--service-account-private-key-file=" + pki("sa.key"),
			"--root-ca-file=" + pki("ca.crt"),
			"--cluster-signing-cert-file=" + pki("ca.crt"),
			"--cluster-signing-key-file=" + pki("ca.key"),
			"--use-service-account-credentials=true",
			"--service-cluster-ip-range=" + serviceCIDR,
			"--leader-elect=false",
			"--concurrent-deployment-syncs=10",
			"--concurrent-replicaset-syncs=10",
			"--kube-api-qps=200",
			"--kube-api-burst=400",
		},
	}, {
		name: "kube-scheduler", bin: "kube-scheduler",
		args: []string{
			"--kubeconfig=" + kubeconfig("kube-scheduler"),
			"--authentication-kubeconfig=" + kubeconfig("kube-scheduler"),
			"--authorization-kubeconfig=" + kubeconfig("kube-scheduler"),
			"--bind-address=127.0.0.1",
			"--secure-port=" + c.port(schedulerPort),
			"--leader-elect=false",
		},
	}, {
		name: "kwok", bin: "kwok",
		args: []string{
			"--kubeconfig=" + kubeconfig("kwok"),
			"--config=" + c.path("kwok-stages.yaml"),
			"--manage-all-nodes=false",
			"--manage-nodes-with-annotation-selector=" + kwokAnnotation + "=fake",
			"--node-lease-duration-seconds=40",
			"--cidr=" + podCIDR,
			"--node-ip=127.0.0.1",
			"--server-address=127.0.0.1:" + c.port(kwokPort),
			"--tls-cert-file=" + pki("kubelet.crt"),
			"--tls-private-key-file=" + pki("kubelet.key"),
		},
	}}
}

// Up starts whatever part of the cluster is not running and returns once the
// cluster is ready: nodes Ready and the default ServiceAccount present. On a
// running cluster it changes nothing; etcd's data is always kept.
func (c *Cluster) Up(ctx context.Context, binDir string) error {
	c.binDir = binDir
	start := time.Now()
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return err
	}
	if err := c.ensurePKI(); err != nil {
		return fmt.Errorf("generating certificates: %w", err)
	}
	if err := c.writeKubeconfigs(); err != nil {
		return err
	}
	if err := c.ensureOIDC(); err != nil {
		return fmt.Errorf("writing the OIDC issuer's configuration: %w", err)
	}
	if err := os.WriteFile(c.path("audit-policy.yaml"), []byte(auditPolicy), 0o644); err != nil {
		return err
	}
	if err := c.ensureKubelet(); err != nil {
		return fmt.Errorf("writing the fake kubelets' configuration: %w", err)
	}
	api, err := newAPIClient(c)
	if err != nil {
		return err
	}
	started := 0
	for _, comp := range c.components() {
		if pid := c.pid(comp.name); pid != 0 {
			if c.sameArgs(pid, comp) {
				continue
			}
			// Started by an older localcluster with other flags: what
			// the tests expect of the cluster would not hold.
			fmt.Fprintf(c.Log, "  restarting %s: its flags changed\n", comp.name)
			if err := c.terminate([]int{pid}); err != nil {
				return err
			}
		}
		fmt.Fprintf(c.Log, "  starting %s\n", comp.name)
		if err := c.start(comp); err != nil {
			return err
		}
		started++
		// Later components need etcd and the apiserver to be serving.
		switch comp.name {
		case "etcd":
			err = c.waitFor(ctx, comp.name, 60*time.Second, func(ctx context.Context) error {
				return httpOK(ctx, "http://127.0.0.1:"+c.port(etcdClientPort)+"/health")
			})
		case "kube-apiserver":
			err = c.waitFor(ctx, comp.name, 90*time.Second, func(ctx context.Context) error {
				if err := api.ready(ctx); err != nil {
					return err
				}
				return api.controlPlaneAuthorized(ctx)
			})
		}
		if err != nil {
			return err
		}
	}
	kubeletPort, _ := strconv.Atoi(c.port(kwokPort))
	if started == 0 {
		if err := api.ready(ctx); err == nil {
			if n, stale, err := api.readyNodes(ctx, kubeletPort); err == nil && n == nodeCount && len(stale) == 0 {
				fmt.Fprintf(c.Log, "Local cluster already running (kubeconfig: %s)\n", c.KubeconfigPath())
				return nil
			}
		}
	}
	if err := c.waitFor(ctx, "kube-apiserver", 90*time.Second, api.ready); err != nil {
		return err
	}
	if _, stale, err := api.readyNodes(ctx, kubeletPort); err == nil {
		for _, name := range stale {
			fmt.Fprintf(c.Log, "  registering node %s again: it predates the kubelet API\n", name)
			if _, err := api.do(ctx, http.MethodDelete, "/api/v1/nodes/"+name, "", nil); err != nil {
				return err
			}
		}
	}
	for i := 0; i < nodeCount; i++ {
		if err := api.createIfMissing(ctx, "/api/v1/nodes", nodeManifest(fmt.Sprintf("kwok-node-%d", i))); err != nil {
			return fmt.Errorf("registering fake nodes: %w", err)
		}
	}
	err = c.waitFor(ctx, "nodes Ready and default ServiceAccount", 120*time.Second, func(ctx context.Context) error {
		if n, _, err := api.readyNodes(ctx, kubeletPort); err != nil {
			return err
		} else if n < nodeCount {
			return fmt.Errorf("%d of %d nodes Ready", n, nodeCount)
		}
		return api.get(ctx, "/api/v1/namespaces/default/serviceaccounts/default", nil)
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(c.Log, "Local cluster ready in %s (kubeconfig: %s)\n", time.Since(start).Round(100*time.Millisecond), c.KubeconfigPath())
	return nil
}

// waitFor polls check until it succeeds, failing after timeout with the last
// error and a pointer to the component logs. A component that died meanwhile
// fails the wait at once.
func (c *Cluster) waitFor(ctx context.Context, what string, timeout time.Duration, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		err := check(ctx)
		if err == nil {
			return nil
		}
		for _, comp := range c.components() {
			if c.exited(comp.name) {
				return fmt.Errorf("%s exited; see %s", comp.name, c.path("logs", comp.name+".log"))
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (logs in %s)", what, err, c.path("logs"))
		case <-tick.C:
		}
	}
}

// Down stops every process of the cluster and removes its state directory.
func (c *Cluster) Down() error {
	if err := c.stopAll(); err != nil {
		return err
	}
	return os.RemoveAll(c.Dir)
}

// Status writes one line per component and a readiness summary to w, and
// reports whether every component runs and the apiserver is ready.
func (c *Cluster) Status(ctx context.Context, w io.Writer) bool {
	healthy := true
	for _, comp := range c.components() {
		if pid := c.pid(comp.name); pid != 0 {
			fmt.Fprintf(w, "%-24s running (pid %d)\n", comp.name, pid)
		} else {
			fmt.Fprintf(w, "%-24s stopped\n", comp.name)
			healthy = false
		}
	}
	api, err := newAPIClient(c)
	if err != nil {
		fmt.Fprintf(w, "%-24s no credentials (%v)\n", "apiserver", err)
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := api.ready(ctx); err != nil {
		fmt.Fprintf(w, "%-24s not ready: %s\n", "apiserver", firstLine(err))
		return false
	}
	port, _ := strconv.Atoi(c.port(kwokPort))
	n, _, err := api.readyNodes(ctx, port)
	if err != nil {
		fmt.Fprintf(w, "%-24s unknown: %s\n", "nodes", firstLine(err))
		return false
	}
	fmt.Fprintf(w, "%-24s %s ready, %d of %d nodes Ready\n", "apiserver", c.apiserverURL(), n, nodeCount)
	fmt.Fprintf(w, "%-24s %s\n", "kubeconfig", c.KubeconfigPath())
	fmt.Fprintf(w, "%-24s %s\n", "audit log", c.AuditLogPath())
	return healthy && n >= nodeCount
}

func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}
