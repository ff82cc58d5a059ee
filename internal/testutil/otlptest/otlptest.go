// Package otlptest is an OTLP/HTTP trace receiver on loopback for tests:
// it decodes what exporters send (protobuf, OpenTelemetry's own types)
// and keeps the spans.
package otlptest

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"time"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// Span is a received span, flattened.
type Span struct {
	Name                  string
	TraceID, ID, ParentID string
	Attributes            map[string]string
	Failed                bool
	Service               string
	// Start and Duration are when the span started and how long it took.
	Start    time.Time
	Duration time.Duration
}

// Receiver serves POST /v1/traces.
type Receiver struct {
	*httptest.Server
	mu    sync.Mutex
	spans []Span
}

// New starts a receiver; close it with Close.
func New() *Receiver {
	r := &Receiver{}
	r.Server = httptest.NewServer(http.HandlerFunc(r.serve))
	return r
}

func (r *Receiver) serve(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost || req.URL.Path != "/v1/traces" {
		http.NotFound(w, req)
		return
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, 16<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var msg coltrace.ExportTraceServiceRequest
	if err := proto.Unmarshal(body, &msg); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	for _, rs := range msg.ResourceSpans {
		service := ""
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.Key == "service.name" {
				service = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				r.spans = append(r.spans, flatten(s, service))
			}
		}
	}
	r.mu.Unlock()
	out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

func flatten(s *tracepb.Span, service string) Span {
	out := Span{Name: s.Name, TraceID: string(s.TraceId), ID: string(s.SpanId), ParentID: string(s.ParentSpanId),
		Attributes: map[string]string{}, Failed: s.GetStatus().GetCode() == tracepb.Status_STATUS_CODE_ERROR, Service: service,
		Start: time.Unix(0, int64(s.StartTimeUnixNano)), Duration: time.Duration(s.EndTimeUnixNano - s.StartTimeUnixNano)}
	for _, kv := range s.Attributes {
		v := kv.GetValue()
		switch {
		case v.GetStringValue() != "":
			out.Attributes[kv.Key] = v.GetStringValue()
		default:
			out.Attributes[kv.Key] = v.String()
		}
	}
	return out
}

// Spans returns what was received so far.
func (r *Receiver) Spans() []Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Span(nil), r.spans...)
}
