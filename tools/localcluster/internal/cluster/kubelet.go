package cluster

import (
	"crypto/ecdsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
)

// podLog is what every fake pod's containers print (kwok's ClusterLogs
// serves it through the kubelet API, so `kubectl logs` and the web UI's
// log view have something to read), in the CRI's log format.
const podLog = `2026-01-01T00:00:00.000000000Z stdout F converge local cluster: this pod runs on a kwok node
2026-01-01T00:00:01.000000000Z stdout F it prints these lines for every container
2026-01-01T00:00:02.000000000Z stderr F log line 3
`

// ensureKubelet writes what kwok needs to serve the kubelet API the
// apiserver calls for logs: a serving certificate from the cluster CA
// (kept once made), the pod log, and the stages and logs configuration
// naming this cluster's port and files.
func (c *Cluster) ensureKubelet() error {
	pki := c.path("pki")
	if _, err := os.Stat(filepath.Join(pki, "kubelet.crt")); err != nil {
		ca, key, err := loadCA(pki)
		if err != nil {
			return err
		}
		if err := issueLoopback(pki, "kubelet", "kwok-kubelet", ca, key); err != nil {
			return err
		}
	}
	if err := os.WriteFile(c.path("pod.log"), []byte(podLog), 0o644); err != nil {
		return err
	}
	stages := strings.NewReplacer("KWOK_PORT", c.port(kwokPort), "POD_LOG_FILE", c.path("pod.log")).Replace(kwokStages)
	return os.WriteFile(c.path("kwok-stages.yaml"), []byte(stages), 0o644)
}

// issueLoopback issues name.crt and name.key: a serving certificate for
// 127.0.0.1 and localhost, from ca.
func issueLoopback(pki, name, cn string, ca *x509.Certificate, key *ecdsa.PrivateKey) error {
	serving := &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:    []string{"localhost"},
	}
	return issue(pki, name, serving, ca, key)
}

// loadCA reads the cluster CA's certificate and key.
func loadCA(pki string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	certPEM, err := os.ReadFile(filepath.Join(pki, "ca.crt"))
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err := os.ReadFile(filepath.Join(pki, "ca.key"))
	if err != nil {
		return nil, nil, err
	}
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, nil, errors.New("the cluster CA is not PEM")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, err
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}
