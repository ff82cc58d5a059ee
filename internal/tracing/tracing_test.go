package tracing

import (
	"context"
	"errors"
	"testing"

	"go.opentelemetry.io/otel/attribute"

	"converge.dev/converge/internal/testutil/otlptest"
)

// Spans reach an OTLP/HTTP receiver with their names, parents,
// attributes, failure status and the service's name; a bad endpoint is
// refused naming the flag.
func TestSetup_SendsSpansOverOTLP(t *testing.T) {
	rcv := otlptest.New()
	defer rcv.Close()
	stop, err := Setup(context.Background(), rcv.URL, "converge-test")
	if err != nil {
		t.Fatal(err)
	}
	ctx, root := Start(context.Background(), "reconcile", attribute.String("app.name", "web"))
	_, child := Start(ctx, "render")
	End(child, errors.New("deploy/x.yaml: bad"), "deploy/x.yaml: bad")
	End(root, nil, "")
	if err := stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	spans := map[string]otlptest.Span{}
	for _, s := range rcv.Spans() {
		spans[s.Name] = s
	}
	r, c := spans["reconcile"], spans["render"]
	if r.Attributes["app.name"] != "web" || r.Service != "converge-test" || r.Failed {
		t.Errorf("reconcile span %+v", r)
	}
	if c.ParentID != r.ID || c.TraceID != r.TraceID || !c.Failed {
		t.Errorf("render span %+v: want a failed child of reconcile", c)
	}
	if _, err := Setup(context.Background(), "collector:4318", "x"); err == nil {
		t.Error("an endpoint without a scheme was accepted")
	}
}
