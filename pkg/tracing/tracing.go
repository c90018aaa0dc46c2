// Package tracing sets up a service's OpenTelemetry tracer and carries
// trace context through Kafka: the W3C traceparent of a span travels in
// events.Event.TraceParent (the record's traceparent header).
package tracing

import (
	"context"
	"fmt"
	"net/url"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/baton-voice/baton/pkg/config"
)

// Config is the tracing section of a service's configuration.
type Config struct {
	// OTLPEndpoint is the OTLP/HTTP traces URL
	// (http://collector:4318/v1/traces); "" exports nothing, but trace
	// context is still created and propagated.
	OTLPEndpoint string `yaml:"otlp_endpoint"`
	// SampleRatio is the share of new traces sampled, 0 to 1; a trace
	// continued from a record keeps its parent's decision.
	SampleRatio float64 `yaml:"sample_ratio"`
}

// DefaultConfig samples every trace and exports none.
func DefaultConfig() Config { return Config{SampleRatio: 1} }

// Validate names the bad field.
func (c Config) Validate() error {
	if c.SampleRatio < 0 || c.SampleRatio > 1 {
		return config.Errorf("tracing.sample_ratio", "%v: want 0 to 1", c.SampleRatio)
	}
	if c.OTLPEndpoint != "" {
		u, err := url.Parse(c.OTLPEndpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return config.Errorf("tracing.otlp_endpoint", "%q: want an http(s) URL or \"\"", c.OTLPEndpoint)
		}
	}
	return nil
}

// Setup builds the service's tracer provider. Shutdown flushes and stops
// the exporter; call it at exit. Nothing is installed globally.
func Setup(ctx context.Context, cfg Config, service string, opts ...sdktrace.TracerProviderOption) (*sdktrace.TracerProvider, func(context.Context) error, error) {
	res := resource.NewSchemaless(attribute.String("service.name", "baton-"+service))
	all := []sdktrace.TracerProviderOption{
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.SampleRatio))),
	}
	if cfg.OTLPEndpoint != "" {
		exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(cfg.OTLPEndpoint))
		if err != nil {
			return nil, nil, fmt.Errorf("otlp exporter %s: %w", cfg.OTLPEndpoint, err)
		}
		all = append(all, sdktrace.WithBatcher(exp))
	}
	tp := sdktrace.NewTracerProvider(append(all, opts...)...)
	return tp, tp.Shutdown, nil
}

// Tracer names the tracer of a service's instrumentation.
func Tracer(tp trace.TracerProvider, service string) trace.Tracer {
	return tp.Tracer("github.com/baton-voice/baton/services/" + service)
}

// Inject returns the traceparent of the span in ctx, or "" when there is
// none.
func Inject(ctx context.Context) string {
	c := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, c)
	return c.Get("traceparent")
}

// Extract returns ctx carrying traceparent as its remote parent; an empty
// or malformed traceparent leaves ctx as it was.
func Extract(ctx context.Context, traceparent string) context.Context {
	if traceparent == "" {
		return ctx
	}
	return propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier{"traceparent": traceparent})
}

// Link returns a link to the span a traceparent names; ok is false when it
// names none.
func Link(traceparent string) (trace.Link, bool) {
	sc := trace.SpanContextFromContext(Extract(context.Background(), traceparent))
	if !sc.IsValid() {
		return trace.Link{}, false
	}
	return trace.Link{SpanContext: sc}, true
}
