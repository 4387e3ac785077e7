package main

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
)

// fileLayer is a layer whose blob is a file on disk, for layers too large to
// hold in memory (the bound figure's 1 GiB) or made by another tool (eStargz).
// Safe for concurrent use.
type fileLayer struct {
	path           string
	digest, diffID v1.Hash
	size           int64
	mt             types.MediaType
}

var _ v1.Layer = (*fileLayer)(nil)

// newFileLayer hashes the blob at path. diffID is the uncompressed tar's
// digest; for an uncompressed media type it is the blob's own.
func newFileLayer(path string, mt types.MediaType, diffID v1.Hash) (*fileLayer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("layer file: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return nil, fmt.Errorf("hashing %s: %w", path, err)
	}
	l := &fileLayer{path: path, size: n, mt: mt, diffID: diffID,
		digest: v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", h.Sum(nil))}}
	if !l.compressed() {
		l.diffID = l.digest
	}
	return l, nil
}

func (l *fileLayer) compressed() bool {
	return l.mt != types.OCIUncompressedLayer && l.mt != types.DockerUncompressedLayer
}

func (l *fileLayer) Digest() (v1.Hash, error)            { return l.digest, nil }
func (l *fileLayer) DiffID() (v1.Hash, error)            { return l.diffID, nil }
func (l *fileLayer) Size() (int64, error)                { return l.size, nil }
func (l *fileLayer) MediaType() (types.MediaType, error) { return l.mt, nil }

func (l *fileLayer) Compressed() (io.ReadCloser, error) {
	f, err := os.Open(l.path)
	if err != nil {
		return nil, fmt.Errorf("layer file: %w", err)
	}
	return f, nil
}

// Uncompressed decodes a gzip blob (the only compression the bench writes to
// files).
func (l *fileLayer) Uncompressed() (io.ReadCloser, error) {
	f, err := l.Compressed()
	if err != nil || !l.compressed() {
		return f, err
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("layer file %s: %w", l.path, err)
	}
	return struct {
		io.Reader
		io.Closer
	}{zr, f}, nil
}
