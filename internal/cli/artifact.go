package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"converge.dev/converge/internal/charts"
)

// PushArtifactOptions holds the flags of `converge push artifact`.
type PushArtifactOptions struct {
	Streams
	Source, Revision string
	Creds            string
	Insecure         bool
	Output           OutputFormat
}

// NewPushCommand returns `converge push artifact`.
func NewPushCommand(streams Streams) *cobra.Command {
	cmd := &cobra.Command{Use: "push", Short: "Ship manifests to a registry (from CI)"}
	o := &PushArtifactOptions{Streams: streams}
	artifact := &cobra.Command{
		Use:   "artifact DIR oci://REGISTRY/REPOSITORY:TAG",
		Short: "Push DIR as an OCI artifact that Applications with spec.source.oci (and Flux's OCIRepository) sync",
		Long: `Pack DIR (regular files; .git left out; links refused) as a gzipped tar in
Flux's artifact format and push it. The digest goes to stdout; an
Application whose spec.source.oci names the repository syncs it.

  converge push artifact ./deploy oci://registry.example.com/org/app:$(git rev-parse --short HEAD) \
    --source "$(git config --get remote.origin.url)" --revision "main@sha1:$(git rev-parse HEAD)"`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.Run(cmd, args[0], args[1])
		},
	}
	f := artifact.Flags()
	f.StringVar(&o.Source, "source", "", "where the content came from (org.opencontainers.image.source), e.g. the Git URL")
	f.StringVar(&o.Revision, "revision", "", "which revision it is (org.opencontainers.image.revision), e.g. main@sha1:<commit>")
	f.StringVar(&o.Creds, "creds", "", "registry credentials as USER:PASSWORD (or a token as :TOKEN)")
	f.BoolVar(&o.Insecure, "insecure", false, "plain http to the registry")
	bindOutput(artifact, &o.Output)
	cmd.AddCommand(artifact)
	return cmd
}

// Run pushes.
func (o *PushArtifactOptions) Run(cmd *cobra.Command, dir, url string) error {
	if err := o.Output.validate(); err != nil {
		return err
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("%s: not a directory", dir)
	}
	cache, err := charts.NewCache(filepath.Join(os.TempDir(), "converge-push"))
	if err != nil {
		return err
	}
	req := charts.PushRequest{Dir: dir, URL: url, Source: o.Source, Revision: o.Revision, Insecure: o.Insecure}
	if o.Creds != "" {
		user, pass, _ := strings.Cut(o.Creds, ":")
		req.Auth = &charts.Auth{Username: user, Password: pass}
		if user == "" {
			req.Auth = &charts.Auth{Token: pass}
		}
	}
	fmt.Fprintf(o.ErrOut, "Pushing %s to %s\n", dir, url)
	digest, err := cache.PushArtifact(cmd.Context(), req)
	if err != nil {
		return err
	}
	fmt.Fprintf(o.ErrOut, "Pushed %s\n", digest)
	if o.Output == OutputJSON || o.Output == OutputYAML {
		return printObject(o.Out, o.Output, map[string]string{"url": url, "digest": digest})
	}
	_, err = fmt.Fprintln(o.Out, digest)
	return err
}
