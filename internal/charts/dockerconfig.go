package charts

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// DockerConfigAuth reads the credentials for registry (a host, with its
// port if any) from a Docker config JSON (.dockerconfigjson): nil when it
// has none for that host. Docker Hub's host is also found as
// "https://index.docker.io/v1/".
func DockerConfigAuth(data []byte, registry string) (*Auth, error) {
	var cfg struct {
		Auths map[string]struct {
			Auth          string `json:"auth"`
			Username      string `json:"username"`
			Password      string `json:"password"`
			IdentityToken string `json:"identitytoken"`
			RegistryToken string `json:"registrytoken"`
		} `json:"auths"`
	}
	if err := json.Unmarshal(data, &cfg); err != nil {
		return nil, errors.New(".dockerconfigjson: not a Docker config JSON")
	}
	want := []string{registry}
	if registry == name.DefaultRegistry || registry == "docker.io" {
		want = append(want, "docker.io", "index.docker.io", "https://index.docker.io/v1/")
	}
	for key, e := range cfg.Auths {
		host := strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(key, "https://"), "http://"), "/")
		host, _, _ = strings.Cut(host, "/")
		if !slices.Contains(want, key) && !slices.Contains(want, host) {
			continue
		}
		a := &Auth{Username: e.Username, Password: e.Password, Token: e.RegistryToken}
		if e.Auth != "" {
			raw, err := base64.StdEncoding.DecodeString(e.Auth)
			if err != nil {
				return nil, fmt.Errorf(".dockerconfigjson: auths[%q].auth is not base64", key)
			}
			a.Username, a.Password, _ = strings.Cut(string(raw), ":")
		}
		if e.IdentityToken != "" {
			a.Password = e.IdentityToken
		}
		return a, nil
	}
	return nil, nil
}
