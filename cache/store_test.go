package cache

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestKeyNames(t *testing.T) {
	tests := []struct {
		name string
		key  Key
		ok   bool
	}{
		{"chunk", Key{KindChunk, digestOf("a"), 12}, true},
		{"index", Key{KindIndex, digestOf("a"), 0}, true},
		{"sha512", Key{KindDocument, "sha512:" + strings.Repeat("ab", 64), 0}, true},
		{"short encoded", Key{KindDecoded, "blake3:a", 3}, true},
		{"no colon", Key{KindChunk, "sha256", 0}, false},
		{"empty", Key{KindChunk, "", 0}, false},
		{"slash", Key{KindChunk, "sha256:../../etc", 0}, false},
		{"dot", Key{KindChunk, "sha256:ab.cd", 0}, false},
		{"upper alg", Key{KindChunk, "SHA256:abcd", 0}, false},
		{"alg separator", Key{KindChunk, "sha-256:abcd", 0}, false},
		{"negative N", Key{KindChunk, digestOf("a"), -1}, false},
		{"unknown kind", Key{Kind(9), digestOf("a"), 0}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rel, err := tt.key.rel()
			if got := err == nil; got != tt.ok {
				t.Fatalf("rel(%v) error = %v, want ok=%v", tt.key, err, tt.ok)
			}
			if !tt.ok {
				if !errors.Is(err, ErrInvalidKey) {
					t.Errorf("error %v does not match ErrInvalidKey", err)
				}
				return
			}
			parts := strings.Split(rel, string(filepath.Separator))
			if len(parts) != 3 {
				t.Fatalf("rel = %q, want kind/fanout/name", rel)
			}
			got, ok := parseName(parts[0], parts[1], parts[2])
			if !ok || got != tt.key {
				t.Errorf("parseName(%q) = %v, %v; want %v", rel, got, ok, tt.key)
			}
		})
	}
}

func TestPutGet(t *testing.T) {
	s := openStore(t, t.TempDir(), 1<<20)
	tests := []struct {
		name string
		key  Key
		data []byte
	}{
		{"chunk", Key{KindChunk, digestOf("blob"), 3}, randomBytes(1, 1000)},
		{"other chunk of same blob", Key{KindChunk, digestOf("blob"), 4}, randomBytes(2, 7)},
		{"empty document", Key{KindDocument, digestOf("doc"), 0}, []byte{}},
		{"index", Key{KindIndex, digestOf("blob"), 0}, randomBytes(3, 5000)},
		{"decoded", Key{KindDecoded, digestOf("blob"), 3}, randomBytes(4, 100)},
	}
	for _, tt := range tests {
		if err := s.Put(tt.key, tt.data); err != nil {
			t.Fatalf("Put(%v): %v", tt.key, err)
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Get(tt.key)
			if err != nil {
				t.Fatalf("Get(%v): %v", tt.key, err)
			}
			if !bytes.Equal(got, tt.data) {
				t.Errorf("Get(%v) = %d bytes, want the %d put", tt.key, len(got), len(tt.data))
			}
		})
	}
	if _, err := s.Get(Key{KindChunk, digestOf("blob"), 5}); !errors.Is(err, ErrMiss) {
		t.Errorf("Get(absent) error = %v, want ErrMiss", err)
	}
	st := s.Stats()
	var want int64
	for _, tt := range tests {
		want += int64(headerSize + len(tt.data))
	}
	if st.Hits != int64(len(tests)) || st.Misses != 1 || st.Entries != int64(len(tests)) || st.Bytes != want {
		t.Errorf("Stats = %+v, want %d hits, 1 miss, %d entries, %d bytes", st, len(tests), len(tests), want)
	}
	if got := diskUsage(t, filepath.Join(s.dir, dataDirName())); got != want {
		t.Errorf("disk usage = %d, want %d", got, want)
	}
}

func TestPutReplaces(t *testing.T) {
	s := openStore(t, t.TempDir(), 1<<20)
	k := Key{KindIndex, digestOf("x"), 0}
	for _, data := range [][]byte{randomBytes(1, 100), randomBytes(2, 30)} {
		if err := s.Put(k, data); err != nil {
			t.Fatal(err)
		}
		got, err := s.Get(k)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("Get after Put = %d bytes, %v; want %d bytes", len(got), err, len(data))
		}
	}
	if st := s.Stats(); st.Entries != 1 || st.Bytes != headerSize+30 {
		t.Errorf("Stats = %+v, want 1 entry of %d bytes", st, headerSize+30)
	}
}

func TestDelete(t *testing.T) {
	s := openStore(t, t.TempDir(), 1<<20)
	keep := Key{KindChunk, digestOf("blob"), 1}
	gone := Key{KindChunk, digestOf("blob"), 2}
	for _, k := range []Key{keep, gone} {
		if err := s.Put(k, randomBytes(uint64(k.N), 100)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Delete(gone); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := s.Get(gone); !errors.Is(err, ErrMiss) {
		t.Errorf("Get after Delete: %v, want ErrMiss", err)
	}
	if _, err := s.Get(keep); err != nil {
		t.Errorf("Get of the other key: %v", err)
	}
	if got := len(entryFiles(t, s.dir)); got != 1 {
		t.Errorf("%d entry files on disk, want 1", got)
	}
	if st := s.Stats(); st.Entries != 1 || st.Bytes != headerSize+100 {
		t.Errorf("Stats = %+v, want 1 entry of %d bytes", st, headerSize+100)
	}
	tests := []struct {
		name string
		key  Key
		want error // nil: no error
	}{
		{"absent key", Key{KindChunk, digestOf("blob"), 9}, nil},
		{"deleted twice", gone, nil},
		{"invalid key", Key{KindChunk, "nodigest", 0}, ErrInvalidKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := s.Delete(tt.key); !errors.Is(err, tt.want) {
				t.Errorf("Delete(%v) = %v, want %v", tt.key, err, tt.want)
			}
		})
	}
	s.Close()
	if err := s.Delete(keep); !errors.Is(err, ErrClosed) {
		t.Errorf("Delete after Close = %v, want ErrClosed", err)
	}
}

func TestCorruptEntryIsMiss(t *testing.T) {
	other := Key{KindChunk, digestOf("other"), 0}
	tests := []struct {
		name    string
		corrupt func(t *testing.T, s *Store, path string)
	}{
		{"payload byte flipped", func(t *testing.T, s *Store, path string) { flipByte(t, path, headerSize+10) }},
		{"last byte flipped", func(t *testing.T, s *Store, path string) { flipByte(t, path, -1) }},
		{"checksum flipped", func(t *testing.T, s *Store, path string) { flipByte(t, path, 5) }},
		{"magic flipped", func(t *testing.T, s *Store, path string) { flipByte(t, path, 0) }},
		{"torn write", func(t *testing.T, s *Store, path string) { truncate(t, path, headerSize+50) }},
		{"header only", func(t *testing.T, s *Store, path string) { truncate(t, path, headerSize) }},
		{"partial header", func(t *testing.T, s *Store, path string) { truncate(t, path, 5) }},
		{"empty", func(t *testing.T, s *Store, path string) { truncate(t, path, 0) }},
		{"another key's file", func(t *testing.T, s *Store, path string) {
			if err := s.Put(other, randomBytes(9, 100)); err != nil {
				t.Fatal(err)
			}
			rel, _ := other.rel()
			data, err := os.ReadFile(filepath.Join(s.data, rel))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t, t.TempDir(), 1<<20)
			k := Key{KindChunk, digestOf("blob"), 1}
			if err := s.Put(k, randomBytes(1, 100)); err != nil {
				t.Fatal(err)
			}
			rel, _ := k.rel()
			path := filepath.Join(s.data, rel)
			tt.corrupt(t, s, path)
			got, err := s.Get(k)
			if !errors.Is(err, ErrMiss) {
				t.Fatalf("Get(corrupt) = %d bytes, %v; want ErrMiss", len(got), err)
			}
			if _, err := os.Stat(path); !os.IsNotExist(err) {
				t.Errorf("corrupt file still on disk: stat error %v", err)
			}
			if _, err := s.Get(k); !errors.Is(err, ErrMiss) {
				t.Errorf("second Get error = %v, want ErrMiss", err)
			}
			st := s.Stats()
			if st.Corrupt != 1 || st.Misses != 2 || s.has(k) {
				t.Errorf("Stats = %+v, want 1 corrupt, 2 misses, key forgotten", st)
			}
		})
	}
}

func flipByte(t *testing.T, path string, i int) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if i < 0 {
		i += len(data)
	}
	data[i] ^= 0x40
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func truncate(t *testing.T, path string, n int64) {
	t.Helper()
	if err := os.Truncate(path, n); err != nil {
		t.Fatal(err)
	}
}

func TestSecondOpenFails(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, 1<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(dir, 1<<20, nil)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open error = %v, want ErrLocked", err)
	}
	for _, want := range []string{dir, "another regfs", fmt.Sprint(os.Getpid())} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(dir, 1<<20, nil)
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	s2.Close()
}

func TestClosed(t *testing.T) {
	s := openStore(t, t.TempDir(), 1<<20)
	k := Key{KindDocument, digestOf("d"), 0}
	if err := s.Put(k, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(k); !errors.Is(err, ErrClosed) {
		t.Errorf("Get after Close error = %v, want ErrClosed", err)
	}
	if err := s.Put(k, []byte("y")); !errors.Is(err, ErrClosed) {
		t.Errorf("Put after Close error = %v, want ErrClosed", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestCloseWaitsForPuts: once Close returns, nothing writes to the directory
// (a caller may remove it), even with Puts in progress when it was called.
func TestCloseWaitsForPuts(t *testing.T) {
	for round := range 20 {
		dir := t.TempDir()
		s := openStore(t, dir, 64<<20)
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Go(func() {
				for i := 0; ; i++ {
					err := s.Put(Key{KindChunk, digestOf(fmt.Sprint(round, w)), int64(i)}, make([]byte, 64<<10))
					if errors.Is(err, ErrClosed) {
						return
					}
					if err != nil {
						t.Errorf("Put: %v", err)
						return
					}
				}
			})
		}
		time.Sleep(time.Duration(round%5) * time.Millisecond)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		before := listFiles(t, dir)
		wg.Wait()
		if after := listFiles(t, dir); !slices.Equal(before, after) {
			t.Fatalf("round %d: files changed after Close returned: %d before, %d after", round, len(before), len(after))
		}
		for _, f := range before {
			if strings.HasPrefix(filepath.Base(f), tmpPrefix) {
				t.Fatalf("round %d: temporary file %s left after Close", round, f)
			}
		}
	}
}

// listFiles returns the paths of every file under dir, sorted.
func listFiles(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func TestVersionMismatchWipes(t *testing.T) {
	tests := []struct {
		name    string
		version string // "" removes the file
	}{
		{"older version", "regfs-cache 0\n"},
		{"garbage", "\x00\x01"},
		{"missing", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := Open(dir, 1<<20, nil)
			if err != nil {
				t.Fatal(err)
			}
			k := Key{KindIndex, digestOf("i"), 0}
			if err := s.Put(k, []byte("index")); err != nil {
				t.Fatal(err)
			}
			s.Close()
			// Data of another version, and a file of the user's that must survive.
			old := filepath.Join(dir, "v0", "chunk", "ab", "sha256-ab.0")
			os.MkdirAll(filepath.Dir(old), 0o700)
			os.WriteFile(old, []byte("old"), 0o600)
			mine := filepath.Join(dir, "notes.txt")
			os.WriteFile(mine, []byte("keep"), 0o600)
			vpath := filepath.Join(dir, versionName)
			if tt.version == "" {
				os.Remove(vpath)
			} else {
				os.WriteFile(vpath, []byte(tt.version), 0o600)
			}

			s = openStore(t, dir, 1<<20)
			if _, err := s.Get(k); !errors.Is(err, ErrMiss) {
				t.Errorf("Get after wipe error = %v, want ErrMiss", err)
			}
			if st := s.Stats(); st.Entries != 0 || st.Bytes != 0 {
				t.Errorf("Stats after wipe = %+v, want empty", st)
			}
			if files := entryFiles(t, dir); len(files) != 0 {
				t.Errorf("entry files after wipe: %v", files)
			}
			if _, err := os.Stat(filepath.Join(dir, "v0")); !os.IsNotExist(err) {
				t.Errorf("old data directory survived: %v", err)
			}
			if _, err := os.Stat(mine); err != nil {
				t.Errorf("unrelated file removed: %v", err)
			}
			if got, _ := os.ReadFile(vpath); string(got) != versionText() {
				t.Errorf("version file = %q, want %q", got, versionText())
			}
		})
	}
}

func TestOpenCleansLeftovers(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, 1<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	k := Key{KindChunk, digestOf("b"), 0}
	if err := s.Put(k, []byte("chunk")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	rel, _ := k.rel()
	fan := filepath.Dir(filepath.Join(dir, dataDirName(), rel))
	leftovers := []string{
		filepath.Join(fan, tmpPrefix+"123"),
		filepath.Join(fan, "stray"),
		filepath.Join(dir, dataDirName(), "chunk", "zz", "sha256-ab.0"), // wrong fan-out
		filepath.Join(dir, dataDirName(), "nokind", "ab", "sha256-ab.0"),
		filepath.Join(dir, tmpPrefix+"version-1"),
	}
	for _, p := range leftovers {
		os.MkdirAll(filepath.Dir(p), 0o700)
		if err := os.WriteFile(p, []byte("leftover data"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s = openStore(t, dir, 1<<20)
	for _, p := range leftovers {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s survived Open (stat error %v)", p, err)
		}
	}
	if got, err := s.Get(k); err != nil || string(got) != "chunk" {
		t.Errorf("Get = %q, %v; want the entry kept", got, err)
	}
}

func TestReopenKeepsEntriesAndRecency(t *testing.T) {
	dir := t.TempDir()
	const payload = 100
	const size = headerSize + payload
	s, err := Open(dir, 3*size, nil)
	if err != nil {
		t.Fatal(err)
	}
	keys := []Key{
		{KindChunk, digestOf("a"), 0},
		{KindChunk, digestOf("b"), 0},
		{KindChunk, digestOf("c"), 0},
	}
	for i, k := range keys {
		if err := s.Put(k, randomBytes(uint64(i), payload)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Get(keys[0]); err != nil { // a becomes the most recent
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, dir, 3*size)
	if st := s.Stats(); st.Entries != 3 || st.Bytes != 3*size {
		t.Fatalf("Stats after reopen = %+v, want 3 entries, %d bytes", st, 3*size)
	}
	for i, k := range keys {
		got, err := s.Get(k)
		if err != nil || !bytes.Equal(got, randomBytes(uint64(i), payload)) {
			t.Fatalf("Get(%v) after reopen = %d bytes, %v", k, len(got), err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The Gets above ran in order a, b, c: a is now the least recent again. Reopen with room
	// for two: a goes.
	s = openStore(t, dir, 2*size)
	if s.has(keys[0]) || !s.has(keys[1]) || !s.has(keys[2]) {
		t.Errorf("after reopen with a smaller bound: has a=%v b=%v c=%v, want false true true",
			s.has(keys[0]), s.has(keys[1]), s.has(keys[2]))
	}
	if got := diskUsage(t, filepath.Join(dir, dataDirName())); got != 2*size {
		t.Errorf("disk usage = %d, want %d", got, 2*size)
	}
}

func TestEvictionOrder(t *testing.T) {
	const payload = 50
	const size = headerSize + payload
	key := func(kind Kind, name string) Key { return Key{kind, digestOf(name), 0} }
	var (
		c1, c2 = key(KindChunk, "c1"), key(KindChunk, "c2")
		z1, z2 = key(KindDecoded, "z1"), key(KindDecoded, "z2")
		d1, d2 = key(KindDocument, "d1"), key(KindDocument, "d2")
		i1, i2 = key(KindIndex, "i1"), key(KindIndex, "i2")
	)
	s := openStore(t, t.TempDir(), 8*size)
	// Put in an order unrelated to kinds; then touch c1, z1, d1, i1 so that the second of
	// each kind is the least recently used.
	for _, k := range []Key{i1, d1, c1, z1, c2, i2, z2, d2} {
		if err := s.Put(k, randomBytes(1, payload)); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []Key{c1, z1, d1, i1} {
		if _, err := s.Get(k); err != nil {
			t.Fatal(err)
		}
	}
	wantEvicted := []Key{c2, c1, z2, z1, d2, d1, i2, i1}
	for n, want := range wantEvicted {
		if err := s.Put(key(KindIndex, fmt.Sprint("new", n)), randomBytes(2, payload)); err != nil {
			t.Fatal(err)
		}
		if s.has(want) {
			t.Fatalf("put %d: %v still present, want it evicted", n, want)
		}
		for _, later := range wantEvicted[n+1:] {
			if !s.has(later) {
				t.Fatalf("put %d: %v evicted before %v", n, later, want)
			}
		}
	}
	if st := s.Stats(); st.Evictions != 8 || st.Bytes != 8*size {
		t.Errorf("Stats = %+v, want 8 evictions and %d bytes", st, 8*size)
	}
}

func TestTooLarge(t *testing.T) {
	s := openStore(t, t.TempDir(), 100)
	k := Key{KindDocument, digestOf("big"), 0}
	if err := s.Put(k, make([]byte, 100)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Put(too large) error = %v, want ErrTooLarge", err)
	}
	if err := s.Put(k, make([]byte, 100-headerSize)); err != nil {
		t.Errorf("Put(exactly the bound): %v", err)
	}
}

func TestConcurrentPutsStayBounded(t *testing.T) {
	dir := t.TempDir()
	const max = 5000
	s := openStore(t, dir, max)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 200 {
				k := Key{Kind(i % numKinds), digestOf(fmt.Sprint(w, i%37)), int64(i % 5)}
				data := randomBytes(uint64(w*1000+i), 1+(w*31+i*17)%300)
				if err := s.Put(k, data); err != nil {
					t.Errorf("Put: %v", err)
					return
				}
				if got, err := s.Get(k); err == nil && len(got) == 0 {
					t.Errorf("Get(%v) returned an empty payload", k)
				}
			}
		})
	}
	wg.Wait()
	st := s.Stats()
	if got := diskUsage(t, filepath.Join(dir, dataDirName())); got > max || got != st.Bytes {
		t.Errorf("disk usage %d, Stats.Bytes %d, bound %d", got, st.Bytes, max)
	}
	if st.Evictions == 0 {
		t.Errorf("no evictions: the test did not fill the store")
	}
	if st.Corrupt != 0 {
		t.Errorf("%d corrupt entries under concurrency", st.Corrupt)
	}
}

func TestAccessTimePersistedOnGet(t *testing.T) {
	s := openStore(t, t.TempDir(), 1<<20)
	k := Key{KindDocument, digestOf("d"), 0}
	if err := s.Put(k, []byte("doc")); err != nil {
		t.Fatal(err)
	}
	rel, _ := k.rel()
	path := filepath.Join(s.data, rel)
	old := time.Now().Add(-time.Hour)
	os.Chtimes(path, old, old)
	s.mu.Lock()
	s.entries[k].persisted = old
	s.mu.Unlock()
	if _, err := s.Get(k); err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if time.Since(info.ModTime()) > time.Minute {
		t.Errorf("mtime after Get = %v, want about now", info.ModTime())
	}
}
