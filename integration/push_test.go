package integration

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/regfs/regfs/fs"
	"github.com/regfs/regfs/internal/fixture"
)

// TestPushWalkFindsPageCache walks a directory of small files and reads a large
// file front to back, as tar or a scanner does: after the first read, regfs hands
// the kernel the files and bytes that follow from what it has decoded, so most
// reads never reach regfs (few READ requests), and every byte read is right.
func TestPushWalkFindsPageCache(t *testing.T) {
	const nSmall = 300
	var entries []fixture.Entry
	small := make(map[string][]byte)
	for i := range nSmall {
		name := fmt.Sprintf("etc/conf/%03d.conf", i)
		small[filepath.Base(name)] = fixture.Prose(uint64(1000+i), 1000+i*17%5000)
		entries = append(entries, fixture.Entry{Name: name, Body: small[filepath.Base(name)]})
	}
	big := fixture.Prose(5, 3<<20)
	entries = append(entries, fixture.Entry{Name: "usr/lib/big.bin", Body: big})
	layer, err := fixture.Layer(fixture.Gzip, fixture.OCI, entries...)
	if err != nil {
		t.Fatal(err)
	}
	srv := refetchPush(t, layer, nil)
	m := mountRegfs(t, mountConfig{registry: srv.Host()})
	root := m.path(refetchRepo, refetchTag, "linux", "amd64", "rootfs")
	stats := func() fs.Stats { return m.stats(t) }
	// settled waits until the pusher is idle (nothing pushed for 100 ms).
	settled := func() fs.Stats {
		t.Helper()
		s := stats()
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
			time.Sleep(100 * time.Millisecond)
			next := stats()
			if next.BytesPushed == s.BytesPushed {
				return next
			}
			s = next
		}
		t.Fatal("the pusher did not settle in 5 s")
		return s
	}

	names := readDir(t, filepath.Join(root, "etc", "conf")) // READDIRPLUS: the kernel knows them
	if len(names) != nSmall {
		t.Fatalf("etc/conf lists %d files, want %d", len(names), nSmall)
	}
	before := stats()
	for i, name := range names {
		if got := readFile(t, filepath.Join(root, "etc", "conf", name)); got != string(small[name]) {
			t.Fatalf("%s: wrong bytes", name)
		}
		if i == 0 {
			settled()
		}
	}
	after := settled()
	reads, pushed := after.ReadRequests-before.ReadRequests, after.BytesPushed-before.BytesPushed
	t.Logf("%d small files read with %d READ requests; %d bytes pushed", nSmall, reads, pushed)
	if pushed == 0 || reads > nSmall/4 {
		t.Errorf("%d READ requests for %d small files, %d bytes pushed; want under %d requests", reads, nSmall, pushed, nSmall/4)
	}

	f, err := os.Open(filepath.Join(root, "usr", "lib", "big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	before = stats()
	buf := make([]byte, 128<<10)
	for off := 0; off < len(big); off += len(buf) {
		n, err := f.ReadAt(buf, int64(off))
		if n != min(len(buf), len(big)-off) || !bytes.Equal(buf[:n], big[off:off+n]) {
			t.Fatalf("big.bin at %d: %d bytes, %v, or wrong bytes", off, n, err)
		}
		if off == 0 {
			settled()
		}
	}
	after = settled()
	reads = after.ReadRequests - before.ReadRequests
	t.Logf("a %d byte file read in %d KiB reads with %d READ requests; %d bytes pushed",
		len(big), len(buf)>>10, reads, after.BytesPushed-before.BytesPushed)
	if max := int64(len(big)/len(buf)) / 2; reads > max {
		t.Errorf("%d READ requests for a %d byte file, want at most %d", reads, len(big), max)
	}
}
