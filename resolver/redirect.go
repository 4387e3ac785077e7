package resolver

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
)

// maxRedirects is how many redirects one request may follow (net/http's own limit).
const maxRedirects = 10

// errRedirectRefused is the cause of a redirect that checkRedirect refused. A request that
// fails with it is an ErrInvalid error and does not mark the registry down.
var errRedirectRefused = errors.New("redirect refused")

// newHTTPClient returns an http.Client over rt that follows redirects under checkRedirect.
func newHTTPClient(rt http.RoundTripper) *http.Client {
	return &http.Client{Transport: rt, CheckRedirect: checkRedirect}
}

// checkRedirect is the redirect policy of every registry request: go-containerregistry's
// checkRedirectSSRF, made stricter for link-local addresses and looser for a loopback or
// private registry's own neighbourhood. A redirect to the host of the first request is
// always followed. A redirect whose target is an IP literal (in any form a dialer accepts,
// "127.1" and "0x7f000001" included) is refused when that address is link-local
// (169.254.0.0/16, fe80::/10: cloud metadata services live there), unspecified or
// multicast, whatever the registry; when it is loopback (or the name is "localhost" or
// *.localhost) unless the registry is loopback itself; and when it is private (10/8,
// 172.16/12, 192.168/16, fc00::/7) unless the registry is loopback or private itself. DNS
// names are followed: their addresses are not known here. At most maxRedirects are
// followed.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) == 0 {
		return nil
	}
	if len(via) >= maxRedirects {
		return fmt.Errorf("%w: stopped after %d redirects", errRedirectRefused, maxRedirects)
	}
	return redirectAllowed(via[0].URL.Hostname(), req.URL.Hostname())
}

// redirectAllowed applies checkRedirect's rule to a redirect from host from to host to
// (host names or IP literals, without ports).
func redirectAllowed(from, to string) error {
	if strings.EqualFold(from, to) {
		return nil
	}
	refuse := func(what string) error {
		return fmt.Errorf("%w: from %q to %s address %q", errRedirectRefused, from, what, to)
	}
	toAddr, toIP := parseIPLiteral(to)
	switch {
	case toIP && (toAddr.IsLinkLocalUnicast() || toAddr.IsLinkLocalMulticast() || toAddr.IsUnspecified() || toAddr.IsMulticast()):
		return refuse("link-local, unspecified or multicast")
	case isLocalhostName(to) || toIP && toAddr.IsLoopback():
		if !loopbackHost(from) {
			return refuse("loopback")
		}
	case toIP && toAddr.IsPrivate():
		if fromAddr, ok := parseIPLiteral(from); !loopbackHost(from) && !(ok && fromAddr.IsPrivate()) {
			return refuse("private")
		}
	}
	return nil
}

// loopbackHost reports whether host (no port) is a loopback address or a localhost name.
func loopbackHost(host string) bool {
	if isLocalhostName(host) {
		return true
	}
	a, ok := parseIPLiteral(host)
	return ok && a.IsLoopback()
}

// isLocalhostName reports whether host is "localhost" or a name under it.
func isLocalhostName(host string) bool {
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	return h == "localhost" || strings.HasSuffix(h, ".localhost")
}

// parseIPLiteral parses host as an IP address in any form a dialer may accept: IPv4 and
// IPv6 (a zone ignored, IPv4-mapped IPv6 unmapped) and the inet_aton forms of IPv4 that a
// C resolver accepts (one to four parts, each decimal, octal with a leading 0, or hex with
// 0x; the last part fills the remaining bytes: "127.1", "2130706433", "0x7f.1").
func parseIPLiteral(host string) (netip.Addr, bool) {
	host, _, _ = strings.Cut(strings.Trim(host, "[]"), "%")
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Unmap(), true
	}
	parts := strings.Split(host, ".")
	if len(parts) > 4 {
		return netip.Addr{}, false
	}
	vals := make([]uint64, len(parts))
	for i, p := range parts {
		lower := strings.ToLower(p)
		if strings.HasPrefix(lower, "0b") || strings.HasPrefix(lower, "0o") || strings.Contains(p, "_") {
			return netip.Addr{}, false // Go's base 0 forms that inet_aton lacks
		}
		v, err := strconv.ParseUint(p, 0, 32) // base 0: 0x hex, leading 0 octal
		if err != nil {
			return netip.Addr{}, false
		}
		vals[i] = v
	}
	var n uint64
	for i, v := range vals[:len(vals)-1] {
		if v > 0xff {
			return netip.Addr{}, false
		}
		n |= v << (8 * (3 - i))
	}
	last := vals[len(vals)-1]
	if last >= 1<<(8*(4-len(vals)+1)) {
		return netip.Addr{}, false
	}
	n |= last
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}), true
}
