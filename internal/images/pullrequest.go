package images

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"converge.dev/converge/internal/redact"
)

// PullRequest is the one pull request an automation keeps open, from Head
// into Base.
type PullRequest struct {
	// Provider is github, gitlab or gitea; API its API's base URL.
	Provider, API string
	// Repository is "owner/name" (GitLab: the project's path).
	Repository  string
	Token       string
	Head, Base  string
	Title, Body string
}

// maxForgeAnswer bounds what a forge's answer may be.
const maxForgeAnswer = 1 << 20

// EnsurePullRequest opens the pull request unless one from Head into Base
// is open already (a push to Head has updated it): it returns its web URL
// and whether it opened it.
func EnsurePullRequest(ctx context.Context, hc *http.Client, pr PullRequest) (string, bool, error) {
	api := strings.TrimSuffix(pr.API, "/")
	owner, _, _ := strings.Cut(pr.Repository, "/")
	var list, create string
	var body map[string]string
	var auth http.Header
	switch pr.Provider {
	case "github":
		if api == "" {
			api = "https://api.github.com"
		}
		list = fmt.Sprintf("%s/repos/%s/pulls?state=open&head=%s&base=%s", api, pr.Repository, url.QueryEscape(owner+":"+pr.Head), url.QueryEscape(pr.Base))
		create = fmt.Sprintf("%s/repos/%s/pulls", api, pr.Repository)
		body = map[string]string{"head": pr.Head, "base": pr.Base, "title": pr.Title, "body": pr.Body}
		auth = http.Header{"Authorization": {"Bearer " + pr.Token}, "Accept": {"application/vnd.github+json"}}
	case "gitea":
		list = fmt.Sprintf("%s/api/v1/repos/%s/pulls?state=open&limit=50", api, pr.Repository)
		create = fmt.Sprintf("%s/api/v1/repos/%s/pulls", api, pr.Repository)
		body = map[string]string{"head": pr.Head, "base": pr.Base, "title": pr.Title, "body": pr.Body}
		auth = http.Header{"Authorization": {"token " + pr.Token}}
	case "gitlab":
		project := url.PathEscape(pr.Repository)
		list = fmt.Sprintf("%s/api/v4/projects/%s/merge_requests?state=opened&source_branch=%s&target_branch=%s", api, project, url.QueryEscape(pr.Head), url.QueryEscape(pr.Base))
		create = fmt.Sprintf("%s/api/v4/projects/%s/merge_requests", api, project)
		body = map[string]string{"source_branch": pr.Head, "target_branch": pr.Base, "title": pr.Title, "description": pr.Body}
		auth = http.Header{"PRIVATE-TOKEN": {pr.Token}}
	default:
		return "", false, fmt.Errorf("spec.push.pullRequest.provider %q: want github, gitlab or gitea", pr.Provider)
	}
	if api == "" {
		return "", false, fmt.Errorf("spec.push.pullRequest.url: required for %s", pr.Provider)
	}
	var open []struct {
		HTMLURL string `json:"html_url"`
		WebURL  string `json:"web_url"`
		Head    struct {
			Ref string `json:"ref"`
		} `json:"head"`
		Base struct {
			Ref string `json:"ref"`
		} `json:"base"`
	}
	if err := forgeCall(ctx, hc, http.MethodGet, list, auth, nil, &open); err != nil {
		return "", false, err
	}
	for _, o := range open {
		// GitHub and GitLab filter by branch; Gitea does not.
		if pr.Provider == "gitea" && (o.Head.Ref != pr.Head || o.Base.Ref != pr.Base) {
			continue
		}
		return o.HTMLURL + o.WebURL, false, nil
	}
	var made struct {
		HTMLURL string `json:"html_url"`
		WebURL  string `json:"web_url"`
	}
	if err := forgeCall(ctx, hc, http.MethodPost, create, auth, body, &made); err != nil {
		return "", false, err
	}
	return made.HTMLURL + made.WebURL, true, nil
}

func forgeCall(ctx context.Context, hc *http.Client, method, u string, hdr http.Header, body any, out any) error {
	var in io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return err
		}
		in = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, in)
	if err != nil {
		return fmt.Errorf("pull request API %s: %w", redact.URL(u), err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, redact.URL(u), Sanitized(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxForgeAnswer+1))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, redact.URL(u), err)
	}
	if len(data) > maxForgeAnswer {
		return fmt.Errorf("%s %s: the answer is over %d bytes", method, redact.URL(u), maxForgeAnswer)
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s", method, redact.URL(u), resp.Status)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: the answer is not the JSON expected: %w", method, redact.URL(u), err)
	}
	return nil
}
