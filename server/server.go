// Package server is connectd's HTTP front: a gin engine in release mode
// with the shared middleware, behind an *http.Server with every timeout
// set, plus the operational routes (/isAlive, /healthz, /readyz, /metrics)
// and graceful shutdown. Surfaces (server/appconnect, plugins, kit, blink,
// admin) mount their routes through the Surface interface; they never build
// engines or servers of their own.
package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/connectd/connectd/core/clock"
	"github.com/connectd/connectd/core/failure"
	"github.com/connectd/connectd/server/httpx"
	"github.com/connectd/connectd/server/middleware"
	"github.com/connectd/connectd/server/ratelimit"
)

// Defaults for Options' zero values.
const (
	DefaultBodyLimit         = 1 << 20 // 1 MiB
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultReadTimeout       = 30 * time.Second
	// DefaultWriteTimeout bounds a whole response; it must exceed the
	// slowest upstream call a handler makes (token exchanges, plugin calls).
	DefaultWriteTimeout    = 60 * time.Second
	DefaultIdleTimeout     = 120 * time.Second
	DefaultMaxHeaderBytes  = 64 << 10
	DefaultShutdownTimeout = 20 * time.Second
	readyTimeout           = 3 * time.Second
)

// Surface is a set of routes for one host platform. Register is called
// once by New, in the order surfaces are given, with the root router and
// the shared middlewares that are not global (rate limits, for example).
type Surface interface {
	Register(r gin.IRouter, mw Middlewares)
}

// SurfaceFunc adapts a function to Surface.
type SurfaceFunc func(r gin.IRouter, mw Middlewares)

// Register implements Surface.
func (f SurfaceFunc) Register(r gin.IRouter, mw Middlewares) { f(r, mw) }

// Middlewares are what surfaces put on their own routes. The global chain
// (request id, recovery, access log, metrics, security headers, CORS, body
// limit) is already on every route.
type Middlewares struct {
	// Limiter limits login attempts (CONNECTD_RATE_LIMIT per minute per
	// key; nil-safe, 0 disables). Use Limiter.PerIP() on login routes and
	// Limiter.CheckAccount(c, account) once the account is known.
	Limiter *ratelimit.Limiter
	// Logger is the server's logger; surfaces take Named children.
	Logger hclog.Logger
}

// Options configure New. Zero values take the defaults above.
type Options struct {
	Addr        string // main listener (Run); tests use Serve with their own listener
	MetricsAddr string // when set, /metrics is served only there
	Logger      hclog.Logger
	// TrustedProxies are CIDRs whose X-Forwarded-For gin believes for
	// ClientIP. Empty trusts no proxy (gin's default trusts all).
	TrustedProxies []string
	CORSOrigins    []string
	RateLimit      int // per minute; 0 disables
	Clock          clock.Clock
	// Ready reports whether dependencies answer (the database ping) for
	// /readyz. Nil: always ready.
	Ready   func(ctx context.Context) error
	Version string
	// Registry is the server's metrics registry, so engine services built
	// before the server can register on it. Nil: a fresh one. Never pass
	// prometheus.DefaultRegisterer's registry: New registers the Go and
	// process collectors on it.
	Registry *prometheus.Registry

	BodyLimit         int64
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	MaxHeaderBytes    int
	ShutdownTimeout   time.Duration
}

// Server is a built server: the gin engine (already carrying every route)
// and the http.Servers around it.
type Server struct {
	Engine   *gin.Engine
	HTTP     *http.Server
	Metrics  *http.Server // nil when /metrics is on the main listener
	Registry *prometheus.Registry
	logger   hclog.Logger
	shutdown time.Duration
}

// New builds the engine, installs the global middleware and operational
// routes, and lets each surface register its routes.
func New(opts Options, surfaces ...Surface) (*Server, error) {
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if opts.Clock == nil {
		opts.Clock = clock.Real{}
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&opts.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	def(&opts.ReadTimeout, DefaultReadTimeout)
	def(&opts.WriteTimeout, DefaultWriteTimeout)
	def(&opts.IdleTimeout, DefaultIdleTimeout)
	def(&opts.ShutdownTimeout, DefaultShutdownTimeout)
	if opts.BodyLimit <= 0 {
		opts.BodyLimit = DefaultBodyLimit
	}
	if opts.MaxHeaderBytes <= 0 {
		opts.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	logger := opts.Logger.Named("http")

	// gin's mode is process-wide (an atomic inside gin); release mode
	// silences its debug printing.
	gin.SetMode(gin.ReleaseMode)
	e := gin.New()
	if err := e.SetTrustedProxies(opts.TrustedProxies); err != nil {
		return nil, fmt.Errorf("server: trusted proxies: %w", err)
	}
	e.ContextWithFallback = true // c.Done()/c.Err() follow the request's context
	e.HandleMethodNotAllowed = false
	e.RedirectTrailingSlash = false
	e.RedirectFixedPath = false

	reg := opts.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := newMetrics(reg)

	e.Use(
		middleware.RequestID(logger),
		middleware.AccessLog(),
		m.middleware(),
		middleware.Recovery(),
		middleware.SecurityHeaders(),
		middleware.CORS(opts.CORSOrigins),
		middleware.BodyLimit(opts.BodyLimit),
	)
	e.NoRoute(func(c *gin.Context) {
		httpx.WriteError(c, http.StatusNotFound, failure.NotFound, "No such route.")
	})

	e.GET("/isAlive", func(c *gin.Context) { c.String(http.StatusOK, "OK") })
	e.GET("/healthz", func(c *gin.Context) {
		c.JSON(http.StatusOK, gin.H{"status": "ok", "version": opts.Version})
	})
	e.GET("/readyz", func(c *gin.Context) {
		if opts.Ready != nil {
			ctx, cancel := context.WithTimeout(c.Request.Context(), readyTimeout)
			defer cancel()
			if err := opts.Ready(ctx); err != nil {
				httpx.Logger(c).Warn("not ready", "error", err)
				httpx.WriteError(c, http.StatusServiceUnavailable, failure.Unavailable, "The database is not reachable.")
				return
			}
		}
		c.JSON(http.StatusOK, gin.H{"status": "ready"})
	})
	metricsHandler := promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
	s := &Server{Engine: e, Registry: reg, logger: logger, shutdown: opts.ShutdownTimeout}
	if opts.MetricsAddr == "" {
		e.GET("/metrics", gin.WrapH(metricsHandler))
	} else {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", metricsHandler)
		s.Metrics = &http.Server{
			Addr:              opts.MetricsAddr,
			Handler:           mux,
			ReadHeaderTimeout: opts.ReadHeaderTimeout,
			ReadTimeout:       opts.ReadTimeout,
			WriteTimeout:      opts.WriteTimeout,
			IdleTimeout:       opts.IdleTimeout,
			MaxHeaderBytes:    opts.MaxHeaderBytes,
			ErrorLog:          logger.Named("metrics").StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
		}
	}

	mw := Middlewares{Limiter: ratelimit.New(opts.RateLimit, opts.Clock), Logger: opts.Logger}
	for _, sf := range surfaces {
		sf.Register(e, mw)
	}

	s.HTTP = &http.Server{
		Addr:              opts.Addr,
		Handler:           e,
		ReadHeaderTimeout: opts.ReadHeaderTimeout,
		ReadTimeout:       opts.ReadTimeout,
		WriteTimeout:      opts.WriteTimeout,
		IdleTimeout:       opts.IdleTimeout,
		MaxHeaderBytes:    opts.MaxHeaderBytes,
		ErrorLog:          logger.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
	}
	return s, nil
}

// Run listens on the configured addresses and serves until ctx is done,
// then shuts down gracefully (in-flight requests get ShutdownTimeout).
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.HTTP.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.HTTP.Addr, err)
	}
	var mln net.Listener
	if s.Metrics != nil {
		if mln, err = net.Listen("tcp", s.Metrics.Addr); err != nil {
			ln.Close()
			return fmt.Errorf("listen on %s (metrics): %w", s.Metrics.Addr, err)
		}
	}
	return s.Serve(ctx, ln, mln)
}

// Serve serves on ln (and the metrics server on mln when both exist) until
// ctx is done, then shuts down gracefully.
func (s *Server) Serve(ctx context.Context, ln, mln net.Listener) error {
	errc := make(chan error, 2)
	var wg sync.WaitGroup
	start := func(srv *http.Server, l net.Listener, what string) {
		s.logger.Info("listening", "addr", l.Addr().String(), "serves", what)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("serve %s: %w", what, err)
			}
		}()
	}
	start(s.HTTP, ln, "http")
	if s.Metrics != nil && mln != nil {
		start(s.Metrics, mln, "metrics")
	}
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	s.logger.Info("shutting down", "grace", s.shutdown)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.shutdown)
	defer cancel()
	if err := s.HTTP.Shutdown(sctx); err != nil && runErr == nil {
		runErr = fmt.Errorf("shutdown: %w", err)
	}
	if s.Metrics != nil {
		if err := s.Metrics.Shutdown(sctx); err != nil && runErr == nil {
			runErr = fmt.Errorf("shutdown metrics: %w", err)
		}
	}
	wg.Wait()
	return runErr
}
