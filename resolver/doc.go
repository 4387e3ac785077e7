// Package resolver turns paths of the regfs tree into registry answers: references, names,
// tags, documents and descriptors. It never builds file trees.
//
// # Names
//
// A [Name] is a directory above the tags: a registry and a path prefix. The first path
// component that looks like a host (it has a '.' or a ':' or is "localhost") names a
// registry; anything else belongs to the default registry. On Docker Hub ("docker.io",
// "index.docker.io" and "registry-1.docker.io" are one registry) a single name "x" is the
// repository "library/x"; nowhere else is "library/" added. [Client.Lookup] decides what a
// child name is (a tag, a digest reference, a deeper name) as DESIGN.md section 1 asks.
//
// Plain HTTP is used for localhost, *.localhost, 127.0.0.0/8, ::1 and the hosts listed in
// [Options.Insecure]; HTTPS everywhere else.
//
// # Requests and caching
//
// Tags are resolved with HEAD requests and the answers live for [Options.TagTTL].
// Documents (indexes, manifests, configs) are fetched by digest once, verified against the
// digest and kept in [Options.Docs] forever after. Listings (tags, catalog) expire with the
// tag TTL too. A HEAD answer obtained by Lookup serves the following Resolve, so that
// `ls <repo>/<tag>/` after its lookup costs one GET for an index and two for a single
// manifest (manifest and config).
//
// # Failures and deadlines
//
// Every request has a stall timeout ([Options.Timeout]): it fails when no progress (headers,
// body bytes) was seen for that long. Quick failures (5xx, 429 within its Retry-After,
// connection resets) of these idempotent requests are retried a bounded number of times with
// backoff, all within one retry budget of one stall timeout: a retry waits for progress only
// for what is left of that budget plus a short grace, so that quick failures followed by a
// stall fail a request within the stall timeout plus the grace (a retry that keeps
// delivering is waited for). A stalled request is not retried; it, or a registry that
// cannot be reached, marks the registry down for a short while, during which cached answers
// (tags past their TTL included) are served at once and uncached requests fail at once
// with [ErrUnavailable].
//
// Listings (tags/list, _catalog) are bounded as a whole: at most 1,000 pages, no page asked
// for once the listing has run for one stall timeout, none read past two, and Link headers
// only to the registry's own host. A listing cut short fails (ErrUnavailable for time,
// ErrInvalid for the rest); a partial list is never returned.
//
// Name lookups survive an unreachable registry (see [Client.Lookup]): a deeper name that
// the catalog (however stale) or the repositories seen so far know stays a name directory,
// and while the registry counts as down any validly spelled name that is not a known tag
// is a lazy name directory, under which digest references resolve from [Options.Docs] with
// no request. So a fresh mount reaches cached images by digest while the registry is down:
// the first request finds it down (within the stall timeout), and everything after answers
// at once. Negative tag answers (no such tag) are kept for the tag TTL like positive ones.
//
// Errors are typed: test them with errors.Is against [ErrNotFound] (ENOENT), [ErrDenied]
// (EACCES), [ErrUnavailable] and [ErrInvalid] (EIO). They name the reference and digest.
// Docker Hub answers 401 for a repository that does not exist as well as for one that needs
// credentials; resolver reports Hub's 401 as ErrNotFound (what "docker pull" shows as
// "repository does not exist or may require 'docker login'"); 401 and 403 elsewhere, and 403
// on Hub, are ErrDenied.
//
// # Redirects
//
// Redirects are followed (at most 10), blob GETs to CDNs included; the registry's
// credentials are only ever sent to the registry's host. A redirect target that refuses
// the request with 401, 403, 404 or 410 (an expired or revoked signed URL) is not the
// registry refusing it: the registry is asked again at once for a fresh redirect, within
// the retry budget, and if every attempt is refused the error is ErrUnavailable.
//
// Redirects to another host given as an IP literal (in any spelling a dialer accepts) are
// checked, as go-containerregistry's checkRedirectSSRF does: link-local (169.254.0.0/16,
// fe80::/10: cloud metadata services), unspecified and multicast addresses are refused
// always; loopback addresses (and localhost names) unless the registry is loopback itself
// (a registry on 127.0.0.1 may send blobs to a CDN on 127.0.0.2, which checkRedirectSSRF
// refuses); private addresses unless the registry is loopback or private itself. A refused
// redirect is ErrInvalid and does not mark the registry down. Redirects to DNS names are
// followed whatever they resolve to, as go-containerregistry does.
//
// # Mirrors
//
// [Options.Mirrors] gives a registry mirrors (pull-through caches), with containerd's
// hosts.toml semantics for mirror hosts, whose default capabilities are "pull" and
// "resolve": manifest HEADs (tag and digest resolution), manifest and config GETs and blob
// range GETs go to the mirrors in order, then to the registry itself. A mirror that fails
// (any error: unreachable, 5xx, 401/403, a stall, bytes that do not match their digest) or
// lacks the content (404) passes the request to the next host; it gets one attempt, as the
// next host is its retry, and a mirror marked down is skipped until its down time ends.
// Listings (tags/list, _catalog) stay on the registry: a pull-through cache only knows what
// it has pulled, and containerd never lists. A mirror is authenticated as a registry of
// its own: its own ping, challenge, keychain entry (looked up under the mirror's host) and
// token; the registry's credentials and tokens are never sent to it. Mirror requests carry
// ns=<registry> as containerd's do. Plain HTTP follows the rule above (loopback, Insecure)
// or an "http://" prefix on the mirror host. [ParseMirror] reads the flag form
// "[REGISTRY=]HOST[:PORT]".
//
// # Proxies and certificates
//
// The default transport is a clone of http.DefaultTransport: HTTPS_PROXY, HTTP_PROXY and
// NO_PROXY are honoured by http.ProxyFromEnvironment, read once per process. Go never
// proxies requests to "localhost" or a loopback address (127.0.0.0/8, ::1), whatever
// NO_PROXY says. The system's CA certificates are trusted; Go's own SSL_CERT_FILE and
// SSL_CERT_DIR replace the system's file and directories when set (Linux), and
// [Options.CAFile] adds the certificates of a PEM file to whatever pool that gives.
//
// # Rate limits
//
// A crawl of the tree (find, updatedb, a scanner) must not exhaust a registry's pull limit.
// Manifest GETs (which Docker Hub counts as pulls; HEADs are free) wait for a token bucket
// per registry, shared with its mirrors: [Options.ManifestRate] per second with bursts of
// [Options.ManifestBurst]; the wait follows the caller's context. Documents are fetched
// once per digest, so only new documents spend tokens. Manifest answers' ratelimit-limit and
// ratelimit-remaining headers ("100;w=21600") are read: below a tenth of the limit a
// warning is logged once per window and manifest GETs slow to [ThrottledManifestRate] (burst
// 1), whatever the configured rate, until an answer shows a tenth or more again or the window
// passes.
//
// # Concurrency
//
// A [Client] is safe for concurrent use; concurrent requests for one tag, document or
// repository transport are joined.
package resolver
