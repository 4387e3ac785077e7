package resolver

import (
	"net"
	"regexp"
	"strings"
)

const (
	hubName     = "docker.io"            // canonical name of Docker Hub
	hubAPIHost  = "registry-1.docker.io" // where Hub's API answers
	hubAuthHost = "index.docker.io"      // the name credentials are stored under
)

var (
	componentRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$`)
	tagRE       = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
	digestRE    = regexp.MustCompile(`^sha256:[a-f0-9]{64}$`)
)

// Name is a directory of the tree above tags: a registry and a path prefix.
type Name struct {
	Registry string // canonical registry name ("docker.io" for Docker Hub)
	Path     string // "" is the registry's root; else components joined by '/'
}

// String returns registry/path.
func (n Name) String() string {
	if n.Path == "" {
		return n.Registry
	}
	return n.Registry + "/" + n.Path
}

// depth is the number of components of the path.
func (n Name) depth() int {
	if n.Path == "" {
		return 0
	}
	return strings.Count(n.Path, "/") + 1
}

// child returns the deeper name n/c.
func (n Name) child(c string) Name {
	if n.Path == "" {
		return Name{Registry: n.Registry, Path: c}
	}
	return Name{Registry: n.Registry, Path: n.Path + "/" + c}
}

// Ref names one tag or digest of one repository.
type Ref struct {
	Registry string // canonical registry name
	Repo     string // repository as the API knows it ("library/" added for Hub single names)
	Tag      string // tag as given; ignored when Digest is set
	Digest   string // "sha256:<hex>" for a digest reference
}

// String returns the reference in the usual form: registry/repo:tag or registry/repo@digest.
func (r Ref) String() string {
	s := r.Registry + "/" + r.Repo
	if r.Digest != "" {
		return s + "@" + r.Digest
	}
	if r.Tag != "" {
		return s + ":" + r.Tag
	}
	return s
}

// repoRef returns r without tag and digest.
func (r Ref) repoRef() Ref { return Ref{Registry: r.Registry, Repo: r.Repo} }

// IsHost reports whether a first path component names a registry: it has a '.' or a ':'
// or is "localhost".
func IsHost(component string) bool {
	return strings.ContainsAny(component, ".:") || component == "localhost"
}

// CanonicalRegistry returns the canonical name of a registry host: the Docker Hub aliases
// become "docker.io", and host names are lower-cased.
func CanonicalRegistry(host string) string {
	h := strings.ToLower(host)
	switch h {
	case "docker.io", "index.docker.io", "registry-1.docker.io":
		return hubName
	}
	return h
}

// validHost reports whether s is a plausible registry host[:port].
func validHost(s string) bool {
	if s == "" || strings.ContainsAny(s, "/@ \t") {
		return false
	}
	host := s
	if h, p, err := net.SplitHostPort(s); err == nil {
		if p == "" || strings.Trim(p, "0123456789") != "" {
			return false
		}
		host = h
	}
	if net.ParseIP(host) != nil {
		return true
	}
	for _, label := range strings.Split(host, ".") {
		if label == "" || strings.Trim(strings.ToLower(label), "abcdefghijklmnopqrstuvwxyz0123456789-") != "" {
			return false
		}
	}
	return true
}

// loopbackOrLocal reports whether host[:port] is plain HTTP by Docker's rule: localhost,
// *.localhost, 127.0.0.0/8 and ::1.
func loopbackOrLocal(hostport string) bool {
	host := hostOnly(hostport)
	host = strings.ToLower(host)
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// hostOnly strips a port and IPv6 brackets.
func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return strings.Trim(hostport, "[]")
}

// parseDigestChild splits a child name that addresses a digest: "sha256:<hex>" or
// "<tag>@sha256:<hex>". ok is false when child is no digest reference; err is set when it
// looks like one but is malformed.
func parseDigestChild(child string) (tag, digest string, ok bool, err error) {
	if i := strings.IndexByte(child, '@'); i >= 0 {
		tag, digest = child[:i], child[i+1:]
		if !tagRE.MatchString(tag) || !digestRE.MatchString(digest) {
			return "", "", false, notFoundf("%q is not a valid <tag>@sha256:<hex> reference", child)
		}
		return tag, digest, true, nil
	}
	if strings.HasPrefix(child, "sha256:") {
		if !digestRE.MatchString(child) {
			return "", "", false, notFoundf("%q is not a valid sha256 digest", child)
		}
		return "", child, true, nil
	}
	return "", "", false, nil
}

// validDigest reports whether d is "sha256:" and 64 lower-case hex digits.
func validDigest(d string) bool { return digestRE.MatchString(d) }
