// Command converge is the GitOps CLI and agent. main only builds the root
// command, runs it and maps its error to an exit code.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"converge.dev/converge/internal/cli"
	"converge.dev/converge/internal/render"
)

func main() {
	// Started as a render worker: serve, and exit.
	render.ServeWorkerIfRequested()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Execute(ctx, cli.DefaultStreams(), os.Args[1:])
	stop()
	// Render workers kept for further renders end with the command, and
	// their temporary directories with them.
	render.CloseWorkers()
	os.Exit(code)
}
