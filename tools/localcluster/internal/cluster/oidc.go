package cluster

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// The apiserver trusts one OpenID Connect issuer besides its own
// certificates and ServiceAccount tokens: https://127.0.0.1:<oidcPort>,
// served by a test's identity provider with pki/oidc.crt (issued by
// pki/oidc-ca.crt). Its ID tokens for the audience OIDCClientID sign a
// user in as "oidc:<sub>" in the groups "oidc:<group>" of their "groups"
// claim (docs/ui.md, single sign-on). Nothing listens there unless a test
// starts a provider; the apiserver keeps asking.
const (
	// OIDCClientID is the audience the apiserver accepts.
	OIDCClientID = "converge-ui"
	// OIDCPrefix is put before every OIDC user and group name.
	OIDCPrefix = "oidc:"
)

// OIDCIssuer is the issuer the apiserver trusts.
func (c *Cluster) OIDCIssuer() string { return "https://127.0.0.1:" + c.port(oidcPort) }

// ensureOIDC writes the issuer's CA and serving certificate (kept once
// made) and the apiserver's authentication configuration.
func (c *Cluster) ensureOIDC() error {
	pki := c.path("pki")
	if _, err := os.Stat(filepath.Join(pki, "oidc.crt")); err != nil {
		key, ca, err := newCA()
		if err != nil {
			return err
		}
		if err := writePair(pki, "oidc-ca", ca, key); err != nil {
			return err
		}
		if err := issueLoopback(pki, "oidc", "converge-local-oidc", ca, key); err != nil {
			return err
		}
	}
	ca, err := os.ReadFile(filepath.Join(pki, "oidc-ca.crt"))
	if err != nil {
		return err
	}
	indented := "      " + strings.ReplaceAll(strings.TrimSpace(string(ca)), "\n", "\n      ")
	config := fmt.Sprintf(`apiVersion: apiserver.config.k8s.io/v1
kind: AuthenticationConfiguration
jwt:
- issuer:
    url: %s
    audiences: [%s]
    certificateAuthority: |
%s
  claimMappings:
    username:
      claim: sub
      prefix: %q
    groups:
      claim: groups
      prefix: %q
`, c.OIDCIssuer(), OIDCClientID, indented, OIDCPrefix, OIDCPrefix)
	return os.WriteFile(c.path("authentication-config.yaml"), []byte(config), 0o644)
}
