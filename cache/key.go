package cache

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
)

// Kind orders eviction: lower kinds are evicted first, except that the two chunk kinds
// share one order (the least recently used chunk of either goes first).
type Kind uint8

const (
	KindChunk     Kind = iota // a range of a large blob (compressed layer bytes), a chunk of a Blob without WithCoarse
	KindFineChunk             // a range of a large blob, a chunk of a Blob WithCoarse (finer than KindChunk's)
	KindDecoded               // decoded bytes of a single-frame zstd stream
	KindDocument              // an index/manifest/config document
	KindIndex                 // a layer index

	numKinds = int(KindIndex) + 1
)

// String returns the kind's name, which is also its directory in the store.
func (k Kind) String() string {
	switch k {
	case KindChunk:
		return "chunk"
	case KindFineChunk:
		return "finechunk"
	case KindDecoded:
		return "decoded"
	case KindDocument:
		return "document"
	case KindIndex:
		return "index"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// parseKind is the inverse of Kind.String for the valid kinds.
func parseKind(s string) (Kind, bool) {
	for k := range Kind(numKinds) {
		if k.String() == s {
			return k, true
		}
	}
	return 0, false
}

// Key names one entry of the store. Digest is an OCI digest ("sha256:<hex>"); N is the chunk
// number for chunked kinds and 0 otherwise.
type Key struct {
	Kind   Kind
	Digest string
	N      int64
}

// String returns a compact form of the key for logs and errors.
func (k Key) String() string {
	return fmt.Sprintf("%s/%s#%d", k.Kind, k.Digest, k.N)
}

// ErrInvalidKey is returned for a key the store cannot name a file after: an unknown kind, a
// negative chunk number, or a digest outside the accepted form (algorithm [a-z0-9]+, a colon,
// then an encoded part of [A-Za-z0-9=_-]+, as the OCI digest grammar allows without separators
// in the algorithm).
var ErrInvalidKey = errors.New("cache: invalid key")

const (
	maxAlgLen = 32
	maxEncLen = 256
)

// rel returns the key's file path relative to the data directory.
func (k Key) rel() (string, error) {
	if int(k.Kind) >= numKinds || k.N < 0 {
		return "", fmt.Errorf("%w: %v", ErrInvalidKey, k)
	}
	alg, enc, ok := strings.Cut(k.Digest, ":")
	if !ok || !validAlg(alg) || !validEnc(enc) {
		return "", fmt.Errorf("%w: digest %q", ErrInvalidKey, k.Digest)
	}
	name := alg + "-" + enc + "." + strconv.FormatInt(k.N, 10)
	return filepath.Join(k.Kind.String(), fanout(enc), name), nil
}

// parseName recovers a key from its kind directory and file name; ok is false for names the
// store did not write.
func parseName(kindDir, fanDir, name string) (Key, bool) {
	kind, ok := parseKind(kindDir)
	if !ok {
		return Key{}, false
	}
	alg, rest, ok := strings.Cut(name, "-")
	if !ok || !validAlg(alg) {
		return Key{}, false
	}
	dot := strings.LastIndexByte(rest, '.')
	if dot < 0 {
		return Key{}, false
	}
	enc, num := rest[:dot], rest[dot+1:]
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || strconv.FormatInt(n, 10) != num || !validEnc(enc) || fanout(enc) != fanDir {
		return Key{}, false
	}
	return Key{Kind: kind, Digest: alg + ":" + enc, N: n}, true
}

// fanout is the name of the directory that spreads entries: the first two characters of the
// encoded digest.
func fanout(enc string) string {
	if len(enc) < 2 {
		return enc + "_"
	}
	return enc[:2]
}

func validAlg(s string) bool {
	if s == "" || len(s) > maxAlgLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

func validEnc(s string) bool {
	if s == "" || len(s) > maxEncLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '=', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}
