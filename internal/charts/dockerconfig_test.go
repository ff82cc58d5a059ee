package charts

import "testing"

func TestDockerConfigAuth(t *testing.T) {
	cfg := `{"auths":{"https://registry.local:5000/v1/":{"auth":"dXNlcjpwYXNz"},"other":{"username":"a","password":"b"}}}`
	a, err := DockerConfigAuth([]byte(cfg), "registry.local:5000")
	if err != nil || a == nil || a.Username != "user" || a.Password != "pass" {
		t.Fatalf("auth = %+v, %v", a, err)
	}
	if a, _ := DockerConfigAuth([]byte(cfg), "elsewhere"); a != nil {
		t.Fatalf("auth for another host: %+v", a)
	}
}
