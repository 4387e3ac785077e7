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
// backoff. A stalled request is not retried; it, or a registry that cannot be reached, marks
// the registry down for a short while, during which cached answers (tags past their TTL
// included) are served at once and uncached requests fail at once with [ErrUnavailable].
//
// Errors are typed: test them with errors.Is against [ErrNotFound] (ENOENT), [ErrDenied]
// (EACCES), [ErrUnavailable] and [ErrInvalid] (EIO). They name the reference and digest.
// Docker Hub answers 401 for a repository that does not exist as well as for one that needs
// credentials; resolver reports Hub's 401 as ErrNotFound (what "docker pull" shows as
// "repository does not exist or may require 'docker login'"); 401 and 403 elsewhere, and 403
// on Hub, are ErrDenied.
//
// # Concurrency
//
// A [Client] is safe for concurrent use; concurrent requests for one tag, document or
// repository transport are joined.
package resolver
