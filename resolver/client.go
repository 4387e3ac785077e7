package resolver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
)

// Defaults of Options.
const (
	DefaultTimeout  = 30 * time.Second
	DefaultTagTTL   = 60 * time.Second
	DefaultDownTime = 10 * time.Second

	// DefaultManifestRate and DefaultManifestBurst are the suggested manifest GET limits
	// of a mount (cmd/regfs's defaults). A zero Options.ManifestRate means unlimited.
	DefaultManifestRate  = 10.0
	DefaultManifestBurst = 20
	// ThrottledManifestRate is the manifest GET rate (per second, burst 1) while a
	// registry's ratelimit-remaining header is below a tenth of its limit.
	ThrottledManifestRate = 1.0
)

// Options configure a Client. The zero value works: Docker Hub, DefaultKeychain, 30 s stall
// timeout, 60 s tag TTL, documents kept in memory, no mirrors, no manifest rate limit.
type Options struct {
	DefaultRegistry string            // "docker.io" when empty; "index.docker.io" is the same
	Insecure        []string          // HOST or HOST:PORT allowed plain HTTP (loopback always)
	Keychain        authn.Keychain    // default authn.DefaultKeychain
	Transport       http.RoundTripper // base transport; default a clone of http.DefaultTransport
	Timeout         time.Duration     // stall timeout per request (no progress that long fails it)
	TagTTL          time.Duration     // tag -> digest answers and listings live this long
	DownTime        time.Duration     // how long a registry counts as down after a stall (10 s)
	Docs            DocStore          // where verified documents live; default in memory
	Logger          *slog.Logger      // nil: discard

	// Mirrors maps a registry ("docker.io", "ghcr.io", "localhost:5000") to mirror hosts
	// tried in order before it for pulls (see the package doc, "Mirrors"). A host is
	// HOST[:PORT], or "http://HOST[:PORT]" to allow plain HTTP to it (as Insecure does),
	// or "https://HOST[:PORT]". ParseMirror reads the flag form.
	Mirrors map[string][]string
	// CAFile names a PEM file of CA certificates trusted in addition to the system's
	// (which SSL_CERT_FILE and SSL_CERT_DIR replace, as Go does everywhere). It needs the
	// default Transport or an *http.Transport.
	CAFile string
	// ManifestRate limits manifest GETs to this many per second per registry (its mirrors
	// included), with bursts of ManifestBurst (0: DefaultManifestBurst); 0 is unlimited.
	// HEADs (tag resolution) are not limited: Docker Hub does not count them as pulls.
	ManifestRate  float64
	ManifestBurst int
}

// DocStore keeps verified documents (indexes, manifests, configs) by digest. Get returns an
// error (any) on a miss. Implementations must be safe for concurrent use.
type DocStore interface {
	Get(digest string) ([]byte, error)
	Put(digest string, b []byte) error
}

// Kind tells what a looked-up child name is.
type Kind uint8

const (
	// KindName is a deeper name directory (namespace or repository).
	KindName Kind = iota
	// KindTag is a tag or digest reference of a repository.
	KindTag
)

// Child is the answer of Lookup.
type Child struct {
	Kind Kind       // KindName or KindTag
	Name Name       // KindName: the deeper name
	Ref  Ref        // KindTag: repository plus the tag or digest as given
	Desc Descriptor // KindTag: what it resolves to
	// Offline is set on a lazy KindName made up while the registry is down, from nothing
	// cached (see Lookup): once the registry answers again the name may turn out to be a
	// tag, so the answer should not be cached (fs: a zero entry timeout).
	Offline bool
}

// Listing is the content of a name directory. Both slices are sorted and unique.
type Listing struct {
	Tags     []string // tags, if the name is a repository
	Children []string // next path components of known repositories under the name
}

// Client talks to registries. Safe for concurrent use.
type Client struct {
	log      *slog.Logger
	keychain authn.Keychain
	base     http.RoundTripper // counting, progress-reporting transport under auth
	timeout  time.Duration
	tagTTL   time.Duration
	downTime time.Duration
	docs     DocStore
	defReg   string
	insecure map[string]bool // HOST and HOST:PORT, lower case
	stats    *counters
	flight   group
	mirrors  map[string][]string // canonical registry -> mirror hosts (canonical), in order
	mirrorOf map[string]bool     // hosts that are some registry's mirror
	rate     float64             // manifest GETs per second per registry; 0: unlimited
	burst    int

	// Knobs that tests change.
	backoff     time.Duration // first retry delay
	maxAttempts int           // attempts per request, first included
	hubHost     string        // Docker Hub's API host[:port]
	now         func() time.Time
	limitSleep  func(context.Context, time.Duration) error // rate limit waits; nil: a timer

	mu        sync.Mutex
	endpoints map[string]*endpoint       // by canonical registry; guarded by mu
	tags      map[string]tagAnswer       // by Ref.String() of a tag ref, negative answers too; guarded by mu
	digests   map[string]Descriptor      // by registry/repo@digest; guarded by mu
	platforms map[string][]PlatformEntry // by digest; guarded by mu
	tagLists  map[string]listAnswer      // by registry/repo; guarded by mu
	limits    map[string]*pullLimit      // by canonical registry; guarded by mu
	sweepAt   int                        // len(tags) at which expired negative answers are dropped; guarded by mu
}

// tagAnswer is a cached tag resolution: a descriptor, or the ErrNotFound or ErrDenied
// error the registry answered.
type tagAnswer struct {
	desc Descriptor
	err  error
	at   time.Time
}

// listAnswer is a cached tags/list answer; exists is false when the name is no repository.
type listAnswer struct {
	tags   []string
	exists bool
	at     time.Time
}

// New returns a Client.
func New(o Options) (*Client, error) {
	c := &Client{
		log:         o.Logger,
		keychain:    o.Keychain,
		timeout:     o.Timeout,
		tagTTL:      o.TagTTL,
		downTime:    o.DownTime,
		docs:        o.Docs,
		insecure:    map[string]bool{},
		stats:       newCounters(),
		backoff:     100 * time.Millisecond,
		maxAttempts: 4,
		hubHost:     hubAPIHost,
		now:         time.Now,
		endpoints:   map[string]*endpoint{},
		tags:        map[string]tagAnswer{},
		digests:     map[string]Descriptor{},
		platforms:   map[string][]PlatformEntry{},
		tagLists:    map[string]listAnswer{},
		limits:      map[string]*pullLimit{},
		mirrors:     map[string][]string{},
		mirrorOf:    map[string]bool{},
		rate:        o.ManifestRate,
		burst:       o.ManifestBurst,
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.keychain == nil {
		c.keychain = authn.DefaultKeychain
	}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	if c.tagTTL <= 0 {
		c.tagTTL = DefaultTagTTL
	}
	if c.downTime <= 0 {
		c.downTime = DefaultDownTime
	}
	if c.docs == nil {
		c.docs = newMemDocs()
	}
	reg := o.DefaultRegistry
	if reg == "" {
		reg = hubName
	}
	if !validHost(reg) {
		return nil, fmt.Errorf("resolver: default registry %q is not a host name", reg)
	}
	c.defReg = CanonicalRegistry(reg)
	for _, h := range o.Insecure {
		if !validHost(h) {
			return nil, fmt.Errorf("resolver: insecure registry %q is not a host[:port]", h)
		}
		c.insecure[strings.ToLower(h)] = true
	}
	if err := c.setMirrors(o.Mirrors); err != nil {
		return nil, err
	}
	if c.rate < 0 || math.IsNaN(c.rate) || math.IsInf(c.rate, 0) {
		return nil, fmt.Errorf("resolver: manifest rate %v is not a rate (0 is unlimited)", c.rate)
	}
	if c.burst <= 0 {
		c.burst = DefaultManifestBurst
	}
	inner, err := newTransport(o.Transport, o.CAFile)
	if err != nil {
		return nil, err
	}
	c.base = &baseTransport{inner: inner, stats: c.stats}
	return c, nil
}

// Root returns the root name of the default registry.
func (c *Client) Root() Name { return Name{Registry: c.defReg} }

// IsHost reports whether a first path component names a registry (see IsHost).
func (c *Client) IsHost(component string) bool { return IsHost(component) }

// Stats counts the requests made and body bytes read, for the mount's cost report.
type Stats struct {
	Requests        map[string]int64 `json:"requests"`         // by HTTP method, token and ping requests included
	BodyBytes       int64            `json:"body_bytes"`       // response body bytes read
	Retries         int64            `json:"retries"`          // requests repeated after a quick failure
	Stalls          int64            `json:"stalls"`           // requests failed by the stall timeout
	MirrorFallbacks int64            `json:"mirror_fallbacks"` // pulls a mirror failed or lacked, tried on the next host
	RateLimited     int64            `json:"rate_limited"`     // manifest GETs that waited for the rate limit
}

// Stats returns a snapshot of the counters.
func (c *Client) Stats() Stats { return c.stats.snapshot() }

// endpointFor returns the state of a registry, creating it on first use.
func (c *Client) endpointFor(reg string) *endpoint {
	reg = CanonicalRegistry(reg)
	c.mu.Lock()
	defer c.mu.Unlock()
	ep, ok := c.endpoints[reg]
	if !ok {
		ep = c.newEndpoint(reg)
		c.endpoints[reg] = ep
	}
	return ep
}

// memDocs is the default in-memory DocStore.
type memDocs struct {
	mu sync.Mutex
	m  map[string][]byte // guarded by mu
}

func newMemDocs() *memDocs { return &memDocs{m: map[string][]byte{}} }

func (d *memDocs) Get(digest string) ([]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	b, ok := d.m[digest]
	if !ok {
		return nil, errors.New("miss")
	}
	return b, nil
}

func (d *memDocs) Put(digest string, b []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.m[digest] = b
	return nil
}
