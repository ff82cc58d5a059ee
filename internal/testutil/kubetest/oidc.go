package kubetest

import (
	"fmt"
	"os"
	"path/filepath"

	"sigs.k8s.io/yaml"
)

// OIDC is the OpenID Connect issuer the local cluster's apiserver trusts
// (tools/localcluster: authentication-config.yaml), for a test to serve
// with the certificate in CertFile and KeyFile.
type OIDC struct {
	Issuer, ClientID          string
	CAFile, CertFile, KeyFile string
}

// LocalOIDC reads the local cluster's trusted issuer.
func LocalOIDC() (OIDC, error) {
	kc, err := LocalKubeconfig()
	if err != nil {
		return OIDC{}, err
	}
	dir := filepath.Dir(kc)
	data, err := os.ReadFile(filepath.Join(dir, "authentication-config.yaml"))
	if err != nil {
		return OIDC{}, fmt.Errorf("the local cluster trusts no OIDC issuer (%w): it predates single sign-on; run `make cluster-up` again", err)
	}
	var config struct {
		JWT []struct {
			Issuer struct {
				URL       string   `json:"url"`
				Audiences []string `json:"audiences"`
			} `json:"issuer"`
		} `json:"jwt"`
	}
	if err := yaml.Unmarshal(data, &config); err != nil {
		return OIDC{}, err
	}
	if len(config.JWT) != 1 || len(config.JWT[0].Issuer.Audiences) != 1 {
		return OIDC{}, fmt.Errorf("%s: want one issuer with one audience", filepath.Join(dir, "authentication-config.yaml"))
	}
	pki := filepath.Join(dir, "pki")
	return OIDC{Issuer: config.JWT[0].Issuer.URL, ClientID: config.JWT[0].Issuer.Audiences[0],
		CAFile: filepath.Join(pki, "oidc-ca.crt"), CertFile: filepath.Join(pki, "oidc.crt"), KeyFile: filepath.Join(pki, "oidc.key")}, nil
}
