package integration

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/regfs/regfs/internal/fixture"
	"github.com/regfs/regfs/internal/testenv"
)

// fileInfo is what the rootfs comparison looks at for one path.
type fileInfo struct {
	Type     byte // tar typeflag; hardlinks resolved to their target's type
	Mode     int64
	UID, GID int
	Size     int64
	Link     string // symlink target
	Xattrs   string // sorted k=v lines
	SHA256   string // regular files
	Mtime    int64
	LinkedTo string // tar hardlink target, for the inode check
}

// extracted returns what go-containerregistry's mutate.Extract makes of img:
// the independent implementation the rootfs is compared with.
func extracted(t *testing.T, img v1.Image) map[string]fileInfo {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	out := map[string]fileInfo{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		name := path.Clean("/" + h.Name)
		fi := fileInfo{Type: h.Typeflag, Mode: h.Mode & 0o7777, UID: h.Uid, GID: h.Gid,
			Link: h.Linkname, Mtime: h.ModTime.Unix(), Xattrs: paxXattrs(h.PAXRecords)}
		switch h.Typeflag {
		case tar.TypeReg:
			hash := sha256.New()
			n, err := io.Copy(hash, tr)
			if err != nil {
				t.Fatal(err)
			}
			fi.Size, fi.SHA256 = n, hex.EncodeToString(hash.Sum(nil))
		case tar.TypeLink:
			fi.LinkedTo = path.Clean("/" + h.Linkname)
			fi.Link = ""
		case tar.TypeSymlink:
			fi.Size = int64(len(h.Linkname))
		}
		out[name] = fi
	}
	// A hardlink is its target's file.
	for name, fi := range out {
		if fi.LinkedTo != "" {
			target := out[fi.LinkedTo]
			target.LinkedTo = fi.LinkedTo
			out[name] = target
		}
	}
	return out
}

func paxXattrs(recs map[string]string) string {
	var kv []string
	for k, v := range recs {
		if x, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
			kv = append(kv, x+"="+v)
		}
	}
	sort.Strings(kv)
	return strings.Join(kv, "\n")
}

// walked returns what the mounted rootfs shows, and each path's inode.
func walked(t *testing.T, root string) (map[string]fileInfo, map[string]uint64) {
	t.Helper()
	out, inos := map[string]fileInfo{}, map[string]uint64{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := "/" + strings.TrimPrefix(strings.TrimPrefix(p, root), "/")
		if name == "/" {
			return nil
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		fi := fileInfo{Mode: int64(st.Mode & 0o7777), UID: int(st.Uid), GID: int(st.Gid),
			Mtime: st.Mtim.Sec, Xattrs: xattrsOf(t, p)}
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFREG:
			fi.Type = tar.TypeReg
			fi.Size, fi.SHA256 = hashFile(t, p)
		case syscall.S_IFDIR:
			fi.Type = tar.TypeDir
		case syscall.S_IFLNK:
			fi.Type = tar.TypeSymlink
			fi.Link, err = os.Readlink(p)
			fi.Size = int64(st.Size)
		case syscall.S_IFCHR:
			fi.Type = tar.TypeChar
		case syscall.S_IFBLK:
			fi.Type = tar.TypeBlock
		case syscall.S_IFIFO:
			fi.Type = tar.TypeFifo
		}
		out[name], inos[name] = fi, st.Ino
		return err
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	return out, inos
}

func hashFile(t *testing.T, p string) (int64, string) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	return n, hex.EncodeToString(h.Sum(nil))
}

func xattrsOf(t *testing.T, p string) string {
	t.Helper()
	buf := make([]byte, 4096)
	n, err := syscall.Listxattr(p, buf)
	if err != nil || n == 0 {
		return ""
	}
	var kv []string
	for _, k := range strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00") {
		v := make([]byte, 4096)
		m, err := syscall.Getxattr(p, k, v)
		if err != nil {
			t.Errorf("getxattr %s %s: %v", p, k, err)
			continue
		}
		kv = append(kv, k+"="+string(v[:m]))
	}
	sort.Strings(kv)
	return strings.Join(kv, "\n")
}

// compareRootfs compares the mounted rootfs with Extract's answer: every
// path Extract has must be there alike; the mount may add only directories
// that a layer implied without an entry.
func compareRootfs(t *testing.T, root string, want map[string]fileInfo) {
	t.Helper()
	got, inos := walked(t, root)
	for name, w := range want {
		g, ok := got[name]
		if !ok {
			t.Errorf("%s: missing from the mount", name)
			continue
		}
		linked := w.LinkedTo
		w.LinkedTo = ""
		if g != w {
			t.Errorf("%s:\n got %+v\nwant %+v", name, g, w)
		}
		if linked != "" && inos[name] != inos[linked] {
			t.Errorf("%s: inode %d, want its hardlink target %s's %d", name, inos[name], linked, inos[linked])
		}
	}
	for name, g := range got {
		if _, ok := want[name]; !ok && g.Type != tar.TypeDir {
			t.Errorf("%s: in the mount, not in Extract's tree", name)
		}
	}
}

// platformImage returns the image of platform p in index object o.
func platformImage(t *testing.T, o any, p v1.Platform) v1.Image {
	t.Helper()
	idx := o.(v1.ImageIndex)
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range m.Manifests {
		if d.Platform != nil && d.Platform.Equals(p) {
			img, err := idx.Image(d.Digest)
			if err != nil {
				t.Fatal(err)
			}
			return img
		}
	}
	t.Fatalf("no %v in the index", p)
	return nil
}

func platformPath(p v1.Platform) []string {
	parts := []string{p.OS, p.Architecture}
	if p.Variant != "" {
		parts = append(parts, p.Variant)
	}
	return parts
}

func TestRootfsMatchesExtract(t *testing.T) {
	srv := testenv.Registry(t)
	set, err := fixture.Features(fixture.FeatureOptions{LargeSize: 6 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if err := set.Push(context.Background(), srv.DirectHost()); err != nil {
		t.Fatal(err)
	}
	m := mountRegfs(t, mountConfig{registry: srv.Host()})
	for _, it := range set {
		for _, p := range fixture.FeaturesPlatforms() {
			t.Run(it.Repo+"/"+strings.Join(platformPath(p), "/"), func(t *testing.T) {
				want := extracted(t, platformImage(t, it.Object, p))
				root := m.path(append(append([]string{it.Repo, fixture.FeaturesTag}, platformPath(p)...), "rootfs")...)
				compareRootfs(t, root, want)
			})
		}
	}

	// The shared base layer was fetched once for all four platforms.
	c := srv.Counts()
	blobs := map[string]int64{}
	for _, r := range c.Requests {
		if r.Kind == testenv.KindBlob && r.Method == "GET" {
			blobs[r.Ref] += r.Bytes
		}
	}
	base, err := platformImage(t, set[0].Object, fixture.FeaturesPlatforms()[0]).Layers()
	if err != nil {
		t.Fatal(err)
	}
	d, _ := base[0].Digest()
	size, _ := base[0].Size()
	if got := blobs[d.String()]; got != size {
		t.Errorf("shared base layer: %d bytes fetched, want its size %d once", got, size)
	}
}

// TestRootfsRandomReads reads the large file at many offsets, from many
// goroutines, and compares bytes with the generator.
func TestRootfsRandomReads(t *testing.T) {
	srv := testenv.Registry(t)
	const size = 24 << 20
	set, err := fixture.Features(fixture.FeatureOptions{LargeSize: size, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	if err := set.Push(context.Background(), srv.DirectHost()); err != nil {
		t.Fatal(err)
	}
	want := fixture.GeneratedBytes(7, size)
	m := mountRegfs(t, mountConfig{registry: srv.Host()})
	p := m.path(fixture.FeaturesOCIRepo, fixture.FeaturesTag, "linux", "arm64", "v8", "rootfs", "usr", "share", "big.bin")
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			f, err := os.Open(p)
			if err != nil {
				errs <- err
				return
			}
			defer f.Close()
			r := rand.New(rand.NewPCG(uint64(g), 1))
			buf := make([]byte, 64<<10)
			for range 40 {
				off := r.Int64N(size)
				n := 1 + r.IntN(len(buf))
				k, err := f.ReadAt(buf[:n], off)
				if err != nil && !(errors.Is(err, io.EOF) && off+int64(k) == size) {
					errs <- err
					return
				}
				if string(buf[:k]) != string(want[off:off+int64(k)]) {
					errs <- errors.New("wrong bytes at offset")
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
