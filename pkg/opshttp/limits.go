package opshttp

import (
	"net/http"
	"time"
)

// Limits bound what one client can hold on an HTTP server: a connection
// that sends its headers, its body or its next request too slowly is
// closed, and headers are capped in size.
type Limits struct {
	// ReadHeader bounds the request line and headers.
	ReadHeader time.Duration
	// Read bounds the whole request, body included: a client that
	// announces a body and never sends it is cut off here.
	Read time.Duration
	// Write bounds the handler and the response.
	Write time.Duration
	// Idle bounds a kept-alive connection between requests.
	Idle time.Duration
	// MaxHeaderBytes caps the request line and headers.
	MaxHeaderBytes int
}

// DefaultLimits suit Baton's HTTP servers: small requests, answers within
// a minute (a dashboard query is bounded by ClickHouse's 60 s).
func DefaultLimits() Limits {
	return Limits{
		ReadHeader:     5 * time.Second,
		Read:           30 * time.Second,
		Write:          75 * time.Second,
		Idle:           120 * time.Second,
		MaxHeaderBytes: 16 << 10,
	}
}

// NewHTTPServer is an http.Server for h with every limit of l set.
func NewHTTPServer(h http.Handler, l Limits) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: l.ReadHeader,
		ReadTimeout:       l.Read,
		WriteTimeout:      l.Write,
		IdleTimeout:       l.Idle,
		MaxHeaderBytes:    l.MaxHeaderBytes,
	}
}
