package integration

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"

	"github.com/regfs/regfs/internal/fixture"
	"github.com/regfs/regfs/internal/testenv"
)

// realEnvRootfs names a directory holding a real Linux root file system (made
// by `debootstrap --foreign --variant=minbase --arch arm64 bookworm DIR`),
// for TestRealRootfsMatchesSource.
const realEnvRootfs = "REGFS_ROOTFS_DIR"

// realInfo is what TestRealRootfsMatchesSource compares for one path.
type realInfo struct {
	Type     uint32 // S_IFMT bits
	Mode     uint32 // permission and special bits (07777)
	UID, GID uint32
	Size     int64  // regular files and symlinks
	Nlink    uint64 // non-directories
	Rdev     uint64 // devices
	Mtime    int64  // seconds
	Link     string // symlink target
	Xattrs   string // sorted k=v lines
	SHA256   string // regular files
}

// realWalk describes every path under root (root itself excluded), keyed by
// its path from root ("/etc/passwd"), and returns each path's inode. Source
// trees are described as their tar layer stores them (roundSrc): mtimes
// rounded to the second as archive/tar writes them, and only the xattrs
// fixture.EntriesFromDir carries (user.* and security.capability). Sockets
// are skipped, as EntriesFromDir skips them.
func realWalk(t *testing.T, root string, roundSrc bool) (map[string]realInfo, map[string]uint64) {
	t.Helper()
	out, inos := map[string]realInfo{}, map[string]uint64{}
	var files []string // regular files, hashed after the walk
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root {
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return fmt.Errorf("lstat: %w", err)
		}
		typ := st.Mode & unix.S_IFMT
		if typ == unix.S_IFSOCK {
			return nil
		}
		fi := realInfo{Type: typ, Mode: st.Mode & 0o7777, UID: st.Uid, GID: st.Gid, Mtime: st.Mtim.Sec}
		if roundSrc {
			fi.Mtime = time.Unix(st.Mtim.Sec, st.Mtim.Nsec).Round(time.Second).Unix()
		}
		if typ != unix.S_IFDIR {
			fi.Nlink = uint64(st.Nlink)
		}
		switch typ {
		case unix.S_IFREG:
			files = append(files, p)
		case unix.S_IFLNK:
			if fi.Link, err = os.Readlink(p); err != nil {
				return err
			}
			fi.Size = st.Size
		case unix.S_IFCHR, unix.S_IFBLK:
			fi.Rdev = uint64(st.Rdev)
		}
		if fi.Xattrs, err = realXattrs(p, roundSrc); err != nil {
			return err
		}
		name := "/" + filepath.ToSlash(strings.TrimPrefix(p, root+"/"))
		out[name], inos[name] = fi, st.Ino
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	sums, err := realHashAll(files, realHashers)
	if err != nil {
		t.Fatalf("hash %s: %v", root, err)
	}
	for i, p := range files {
		name := "/" + filepath.ToSlash(strings.TrimPrefix(p, root+"/"))
		fi := out[name]
		fi.Size, fi.SHA256 = sums[i].size, sums[i].sum
		out[name] = fi
	}
	return out, inos
}

// realHashers is how many files realWalk reads at once: two keep both
// cores of a CI machine busy (the mount's decompression runs in this
// process).
const realHashers = 2

type realSum struct {
	size int64
	sum  string
}

// realHashAll returns the size and sha256 of each file, reading jobs at a
// time; workers take files in order, so reads stay near-sequential in a
// layer.
func realHashAll(files []string, jobs int) ([]realSum, error) {
	sums := make([]realSum, len(files))
	errs := make([]error, jobs)
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := range jobs {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(files) {
					return
				}
				size, sum, err := realHash(files[i])
				if err != nil {
					errs[w] = err
					return
				}
				sums[i] = realSum{size, sum}
			}
		})
	}
	wg.Wait()
	return sums, errors.Join(errs...)
}

// realHash returns the size and sha256 of file p.
func realHash(p string) (int64, string, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return n, "", fmt.Errorf("read %s: %w", p, err)
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

// realXattrs returns p's extended attributes (not following a symlink) as
// sorted k=v lines; with carried, only those a layer carries.
func realXattrs(p string, carried bool) (string, error) {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if errors.Is(err, unix.ENOTSUP) || n == 0 {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("listxattr %s: %w", p, err)
	}
	var kv []string
	for _, k := range strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00") {
		if carried && !strings.HasPrefix(k, "user.") && k != "security.capability" {
			continue
		}
		v := make([]byte, 64<<10)
		m, err := unix.Lgetxattr(p, k, v)
		if err != nil {
			return "", fmt.Errorf("getxattr %s %s: %w", p, k, err)
		}
		kv = append(kv, k+"="+string(v[:m]))
	}
	sort.Strings(kv)
	return strings.Join(kv, "\n"), nil
}

// realCompare compares the mount's description with the source's: the same
// paths, alike; and inodes that map one to one (hardlinks share an inode in
// the mount exactly where they do in the source, and distinct files never
// do). It returns how many paths it compared.
func realCompare(t *testing.T, got, want map[string]realInfo, gotIno, wantIno map[string]uint64) int {
	t.Helper()
	const maxErrors = 30
	errs := 0
	report := func(format string, args ...any) {
		t.Helper()
		if errs++; errs <= maxErrors {
			t.Errorf(format, args...)
		}
	}
	names := make([]string, 0, len(want))
	for name := range want {
		names = append(names, name)
	}
	sort.Strings(names)
	mountOf, srcOf := map[uint64]uint64{}, map[uint64]uint64{}
	for _, name := range names {
		w := want[name]
		g, ok := got[name]
		if !ok {
			report("%s: missing from the mount", name)
			continue
		}
		if g != w {
			report("%s:\n got %+v\nwant %+v", name, g, w)
		}
		si, mi := wantIno[name], gotIno[name]
		if prev, ok := mountOf[si]; ok && prev != mi {
			report("%s: inode %d, but a hardlink of it has %d in the mount", name, mi, prev)
		}
		if prev, ok := srcOf[mi]; ok && prev != si {
			report("%s: inode %d in the mount is shared with a distinct source file", name, mi)
		}
		mountOf[si], srcOf[mi] = mi, si
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			report("%s: in the mount, not in the source", name)
		}
	}
	if errs > maxErrors {
		t.Errorf("… and %d more differences", errs-maxErrors)
	}
	return len(names)
}

// realLayer is a gzip layer held in memory. Immutable; safe for concurrent
// use.
type realLayer struct {
	blob           []byte
	digest, diffID v1.Hash
}

var _ v1.Layer = (*realLayer)(nil)

func (l *realLayer) Digest() (v1.Hash, error)            { return l.digest, nil }
func (l *realLayer) DiffID() (v1.Hash, error)            { return l.diffID, nil }
func (l *realLayer) Size() (int64, error)                { return int64(len(l.blob)), nil }
func (l *realLayer) MediaType() (types.MediaType, error) { return types.OCILayer, nil }
func (l *realLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.blob)), nil
}

func (l *realLayer) Uncompressed() (io.ReadCloser, error) {
	return gzip.NewReader(bytes.NewReader(l.blob))
}

// realGzipLayer writes the tar of dir with fixture.LayerFromDir and
// compresses it with GNU gzip: the compressor most layers of real images
// went through at some point, whose stored blocks (the .debs in
// var/cache/apt/archives are incompressible) exercise the restart-point
// corrections of DESIGN.md section 3. It also keeps the race-instrumented
// test binary from compressing 200 MB itself.
func realGzipLayer(t *testing.T, dir string) v1.Layer {
	t.Helper()
	gz := testenv.RequireBinary(t, "gzip")
	tarLayer, err := fixture.LayerFromDir(dir, fixture.Uncompressed, fixture.OCI)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := tarLayer.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	var blob, stderr bytes.Buffer
	cmd := exec.Command(gz, "-n", "-c")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tr, &blob, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("gzip: %v: %s", err, stderr.String())
	}
	diffID, err := tarLayer.Digest() // the uncompressed layer's digest
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(blob.Bytes())
	return &realLayer{
		blob:   blob.Bytes(),
		digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])},
		diffID: diffID,
	}
}

// TestRealRootfsMatchesSource builds a gzip layer from a real Linux root file
// system (fixture.LayerFromDir's tar, GNU gzip's compression; device nodes,
// hardlinks, setuid files, thousands of paths), pushes
// it as a linux/arm64 image to Debian's docker-registry, mounts it and
// compares every path's type, mode, owner, size, link count, device number,
// mtime, link target, xattrs, content hash and hardlink inodes with the
// source directory itself.
func TestRealRootfsMatchesSource(t *testing.T) {
	dir := os.Getenv(realEnvRootfs)
	if dir == "" {
		t.Skipf("%s unset: set it to a debootstrap'd tree (debootstrap --foreign --variant=minbase --arch arm64 bookworm DIR)", realEnvRootfs)
	}
	if raceEnabled {
		t.Skip("slow under -race (minutes); make test runs it without -race")
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		t.Fatalf("%s=%s: not a directory: %v", realEnvRootfs, dir, err)
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	testenv.RequireFUSE(t)
	srv := testenv.Registry(t)

	start := time.Now()
	layer := realGzipLayer(t, dir)
	img, err := fixture.Image(fixture.OCI, fixture.Platform("linux/arm64"), layer)
	if err != nil {
		t.Fatal(err)
	}
	const repo, tag = "real/debian", "bookworm"
	if err := (fixture.Set{{Repo: repo, Tags: []string{tag}, Object: img}}).Push(context.Background(), srv.DirectHost()); err != nil {
		t.Fatal(err)
	}
	size, _ := layer.Size()
	t.Logf("layer of %s: %d bytes gzip, built and pushed in %v", dir, size, time.Since(start))

	want, wantIno := realWalk(t, dir, true)
	m := mountRegfs(t, mountConfig{registry: srv.Host()})
	root := m.path(repo, tag, "linux", "arm64", "rootfs")
	start = time.Now()
	if _, err := os.Stat(filepath.Join(root, "etc")); err != nil {
		t.Fatal(err)
	}
	t.Logf("first access (layer indexed) in %v", time.Since(start))
	start = time.Now()
	got, gotIno := realWalk(t, root, false)
	t.Logf("walked and hashed the mount in %v", time.Since(start))
	n := realCompare(t, got, want, gotIno, wantIno)
	if n < 100 {
		t.Errorf("compared %d paths; a root file system has thousands", n)
	}
	t.Logf("compared %d paths", n)
}
