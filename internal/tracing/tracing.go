// Package tracing sends the agent's traces over OTLP/HTTP when asked
// (--otlp-endpoint): one trace per Application reconcile, with a span for
// each of its steps (source, render, plan, apply, hooks, health). Off, it
// costs nothing: the tracer is OpenTelemetry's no-op. It holds no other
// state and reads no environment: the endpoint comes from the flag.
package tracing

import (
	"context"
	"fmt"
	"net/url"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"converge.dev/converge/internal/version"
)

// Name is the instrumentation scope of converge's spans.
const Name = "converge.dev/converge"

// Setup sends spans to the OTLP/HTTP endpoint (http://host:4318 or
// https://...; the path /v1/traces is added) from now on. The returned
// function flushes what is pending and stops.
func Setup(ctx context.Context, endpoint, service string) (func(context.Context) error, error) {
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--otlp-endpoint %q: want http(s)://host:port", endpoint)
	}
	opts := []otlptracehttp.Option{otlptracehttp.WithEndpoint(u.Host), otlptracehttp.WithTimeout(10 * time.Second)}
	if u.Scheme == "http" {
		opts = append(opts, otlptracehttp.WithInsecure())
	}
	if p := u.Path; p != "" && p != "/" {
		opts = append(opts, otlptracehttp.WithURLPath(p))
	}
	exp, err := otlptracehttp.New(ctx, opts...)
	if err != nil {
		return nil, err
	}
	res := resource.NewSchemaless(attribute.String("service.name", service), attribute.String("service.version", version.Version))
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp, sdktrace.WithBatchTimeout(time.Second)), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	return tp.Shutdown, nil
}

// Start starts a span named name under ctx's.
func Start(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	return otel.Tracer(Name).Start(ctx, name, trace.WithAttributes(attrs...))
}

// End ends span, marking it failed with err's message (already redacted
// by the caller) when err is set.
func End(span trace.Span, err error, msg string) {
	if err != nil {
		span.SetStatus(codes.Error, msg)
	}
	span.End()
}
