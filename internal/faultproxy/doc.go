// Package faultproxy is a deterministic, fault-injecting HTTP reverse proxy for
// regfs's tests. It sits in front of a registry (go-containerregistry's
// in-process one or Debian's docker-registry, plain HTTP on loopback) and
// answers each request either by forwarding it or by one of the failures a
// network and a registry can produce.
//
// # Rules
//
// A [Rule] matches requests by method, kind of path ([testenv.Classify]),
// repository, reference (tag or digest), the presence of a Range header, and
// its position among the requests it matched (the nth, and how many after
// it), optionally with a probability drawn from the proxy's seeded source.
// The rules are tried in order; the first that decides to act applies its
// [Fault]. Everything else is forwarded unchanged.
//
// # Faults
//
//   - [Status]: a 5xx or 429, with or without Retry-After.
//   - [ExpireToken], [ExpireTokenOlderThan]: with [Options.Auth], the
//     request's token and every older one stop working and the request is
//     answered 401 with a fresh challenge, as when a token expires in the
//     middle of a read: the client must re-authenticate.
//   - [Redirect] and [RedirectExpired]: a blob GET is redirected to a second
//     "CDN" host, which serves the blob's bytes (Range honoured), counts every
//     request that carries an Authorization header (it must never see the
//     registry's), and answers 403 to an expired redirect.
//   - [ResetAfter], [StallAfter]: the connection is reset, or stops moving,
//     after n bytes of the body; [Blackhole]: the request is accepted and never
//     answered. [Proxy.SetDown] blackholes every request, the token endpoint
//     and the CDN included.
//   - [ShortBody]: a coherent answer with only the first n bytes of the body;
//     [ShiftContentRange], [DropContentRange]: a wrong or missing
//     Content-Range; [IgnoreRange]: 200 and the whole blob instead of 206.
//   - [FlipBit]: one bit of the body flipped.
//   - [HugeManifest]: a valid, digest-correct manifest of any size, to check
//     that the client refuses it without reading it all.
//   - [LinkLoop], [EndlessLinks]: tags/list pages whose Link headers loop back,
//     or never end.
//
// # Counters
//
// [Proxy.Counters] reports what the proxy saw and did: requests by kind,
// faults applied by name ([Fault.String]), tokens issued and rejected, and the
// CDN's requests, expired answers and Authorization leaks.
//
// # Events
//
// [Proxy.RecordEvents] makes the proxy keep a log of the last n requests (the
// registry API's, the token endpoint's and the CDN's), each an [Event] with
// its arrival, the time its status was written, its end, the rule and fault
// that acted, the bytes sent and how it ended (answered, reset, held until
// the client left, …). [Proxy.EventsBetween] returns those in flight during
// a window: a test that saw a slow or failed operation dumps them to show
// what the registry side did meanwhile.
//
// # Concurrency
//
// A [Proxy] is safe for concurrent use. Its rules may be replaced while
// requests are in flight. [Proxy.Close] releases every stalled or blackholed
// request before closing the servers, so it never hangs.
package faultproxy
