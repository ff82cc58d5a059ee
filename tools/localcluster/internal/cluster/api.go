package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

// apiClient talks to the local apiserver as the admin identity. It is plain
// net/http so that the cluster tool builds in seconds, without client-go.
type apiClient struct {
	base string
	http *http.Client
}

func newAPIClient(c *Cluster) (*apiClient, error) {
	cert, err := tls.LoadX509KeyPair(c.path("pki", "admin.crt"), c.path("pki", "admin.key"))
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(c.path("pki", "ca.crt"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return &apiClient{
		base: c.apiserverURL(),
		http: &http.Client{
			Timeout: 5 * time.Second,
			Transport: &http.Transport{TLSClientConfig: &tls.Config{
				Certificates: []tls.Certificate{cert},
				RootCAs:      pool,
			}},
		},
	}, nil
}

func (a *apiClient) do(ctx context.Context, method, path, body string, out any) (int, error) {
	return a.doAs(ctx, "", method, path, body, out)
}

// doAs is do impersonating user ("": the admin itself).
func (a *apiClient) doAs(ctx context.Context, user, method, path, body string, out any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	if user != "" {
		req.Header.Set("Impersonate-User", user)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "converge-localcluster")
	resp, err := a.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode >= 300 {
		return resp.StatusCode, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(data)))
	}
	if out != nil {
		return resp.StatusCode, json.Unmarshal(data, out)
	}
	return resp.StatusCode, nil
}

func (a *apiClient) get(ctx context.Context, path string, out any) error {
	_, err := a.do(ctx, http.MethodGet, path, "", out)
	return err
}

// controlPlaneAuthorized succeeds once the controller-manager may read
// what it reads first (the request-header CA in kube-system): /readyz can
// pass a moment before the authorizer sees the bootstrap role bindings,
// and a controller-manager started then exits at once.
func (a *apiClient) controlPlaneAuthorized(ctx context.Context) error {
	_, err := a.doAs(ctx, "system:kube-controller-manager", http.MethodGet, "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication", "", nil)
	return err
}

// ready succeeds once every apiserver readiness check passes.
func (a *apiClient) ready(ctx context.Context) error {
	return a.get(ctx, "/readyz", nil)
}

// createIfMissing POSTs obj to the collection at path; an existing object is
// left as it is.
func (a *apiClient) createIfMissing(ctx context.Context, path, obj string) error {
	code, err := a.do(ctx, http.MethodPost, path, obj, nil)
	if code == http.StatusConflict {
		return nil
	}
	return err
}

// readyNodes counts nodes whose Ready condition is True.
func (a *apiClient) readyNodes(ctx context.Context, kubeletPort int) (ready int, stale []string, err error) {
	var list struct {
		Items []struct {
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
			Status struct {
				Conditions []struct {
					Type   string `json:"type"`
					Status string `json:"status"`
				} `json:"conditions"`
				DaemonEndpoints struct {
					KubeletEndpoint struct {
						Port int `json:"Port"`
					} `json:"kubeletEndpoint"`
				} `json:"daemonEndpoints"`
			} `json:"status"`
		} `json:"items"`
	}
	if err := a.get(ctx, "/api/v1/nodes", &list); err != nil {
		return 0, nil, err
	}
	for _, node := range list.Items {
		for _, cond := range node.Status.Conditions {
			if cond.Type != "Ready" || cond.Status != "True" {
				continue
			}
			// A node registered before kwok served the kubelet API.
			if node.Status.DaemonEndpoints.KubeletEndpoint.Port != kubeletPort {
				stale = append(stale, node.Metadata.Name)
				continue
			}
			ready++
		}
	}
	return ready, stale, nil
}

// httpOK succeeds when url answers 200.
func httpOK(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}
