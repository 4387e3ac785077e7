package cache

import (
	"container/list"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

var (
	// ErrMiss is returned by Get for a key the store does not hold (or held corrupted).
	ErrMiss = errors.New("cache: miss")
	// ErrTooLarge is returned by Put for an entry larger than the store's whole bound.
	ErrTooLarge = errors.New("cache: entry larger than the cache")
	// ErrClosed is returned by Get and Put after Close.
	ErrClosed = errors.New("cache: store closed")
)

// touchEvery bounds how often a Get writes an entry's access time to its file's mtime; Close
// writes the remaining ones.
const touchEvery = time.Minute

// Stats are counters of a Store since Open, and its current size.
type Stats struct {
	Hits      int64 `json:"hits"`      // Gets that returned an entry
	Misses    int64 `json:"misses"`    // Gets that returned ErrMiss (corrupt entries included)
	Corrupt   int64 `json:"corrupt"`   // entries that failed their checksum and were deleted
	Bytes     int64 `json:"bytes"`     // size of the entries' files, headers included
	Entries   int64 `json:"entries"`   // number of entries
	Evictions int64 `json:"evictions"` // entries evicted to stay within the bound

	Fetches      int64 `json:"fetches"`       // RangeSource.Fetch calls made by the Blobs on this store
	BytesFetched int64 `json:"bytes_fetched"` // body bytes those fetches read
}

// Store is a content-addressed, size-bounded on-disk store. It is safe for concurrent use.
type Store struct {
	dir  string // the directory given to Open
	data string // dir/v<formatVersion>
	max  int64
	log  *slog.Logger
	lock *os.File

	fetches      atomic.Int64
	bytesFetched atomic.Int64

	writes sync.WaitGroup // Puts writing outside mu; Close waits for them

	mu      sync.Mutex
	closed  bool                // guarded by mu
	entries map[Key]*entry      // guarded by mu
	lru     [numKinds]list.List // guarded by mu; per kind, least recently used first
	// invariant: bytes is the sum of the sizes of entries.
	bytes                            int64  // guarded by mu
	reserved                         int64  // guarded by mu; space held by Puts writing temporary files
	gen                              uint64 // guarded by mu; last generation handed out
	hits, misses, corrupt, evictions int64  // guarded by mu
}

// entry is one file of the store. All fields are guarded by Store.mu.
type entry struct {
	key       Key
	rel       string // path relative to Store.data
	size      int64  // file size, header included
	gen       uint64 // changes when the file is replaced
	atime     time.Time
	persisted time.Time // the access time last written to the file's mtime
	elem      *list.Element
}

// Open opens the store in dir, creating it if needed, bounded to maxBytes of entry files. It
// holds an exclusive lock on dir until Close: a second Open of dir fails with ErrLocked. A dir
// written by another format version is wiped; leftover temporary files are removed; the
// entries on disk are indexed and their recency restored from their mtimes. log may be nil.
func Open(dir string, maxBytes int64, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if maxBytes <= 0 {
		return nil, fmt.Errorf("cache: open %s: size bound must be positive, got %d", dir, maxBytes)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("cache: open: %w", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	s := &Store{
		dir:     dir,
		data:    filepath.Join(dir, dataDirName()),
		max:     maxBytes,
		log:     log,
		lock:    lock,
		entries: make(map[Key]*entry),
	}
	if err := s.load(); err != nil {
		unlockDir(lock)
		return nil, fmt.Errorf("cache: open %s: %w", dir, err)
	}
	s.mu.Lock()
	s.makeRoomLocked(0)
	st := s.statsLocked()
	s.mu.Unlock()
	log.Info("cache: opened", "dir", dir, "entries", st.Entries, "bytes", st.Bytes, "max_bytes", maxBytes)
	return s, nil
}

// Close writes pending access times and releases the directory. Get and Put fail afterwards.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	var touch []*entry
	for _, e := range s.entries {
		if !e.atime.Equal(e.persisted) {
			touch = append(touch, &entry{rel: e.rel, atime: e.atime})
		}
	}
	s.mu.Unlock()
	// A Put that was writing finds the store closed and removes its
	// temporary file; once Close returns, nothing writes to the directory.
	s.writes.Wait()
	for _, e := range touch {
		s.touch(e.rel, e.atime)
	}
	return unlockDir(s.lock)
}

// Get returns the payload stored under k, or an error that matches ErrMiss. A corrupted entry
// is deleted and reported as a miss.
func (s *Store) Get(k Key) ([]byte, error) {
	rel, err := k.rel()
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	e := s.entries[k]
	if e == nil {
		s.misses++
		s.mu.Unlock()
		return nil, ErrMiss
	}
	gen := e.gen
	s.mu.Unlock()

	file, err := os.ReadFile(filepath.Join(s.data, rel))
	payload, ok := decode(rel, file)
	if err == nil && !ok {
		s.log.Warn("cache: corrupt entry deleted", "key", k.String(), "path", filepath.Join(s.data, rel))
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.log.Warn("cache: unreadable entry deleted", "key", k.String(), "err", err)
	}

	s.mu.Lock()
	e = s.entries[k]
	if err != nil || !ok {
		s.misses++
		if err == nil {
			s.corrupt++
		}
		if e != nil && e.gen == gen {
			s.removeLocked(e)
		}
		s.mu.Unlock()
		return nil, fmt.Errorf("cache: get %v: %w", k, ErrMiss)
	}
	s.hits++
	now := time.Now()
	var persist bool
	if e != nil && e.gen == gen {
		e.atime = now
		s.lru[k.Kind].MoveToBack(e.elem)
		if now.Sub(e.persisted) >= touchEvery {
			e.persisted = now
			persist = true
		}
	}
	s.mu.Unlock()
	if persist {
		s.touch(rel, now)
	}
	return payload, nil
}

// Put stores b under k, replacing any entry of that key, and evicts other entries to stay
// within the bound. The entry appears whole or not at all (temporary file and rename).
func (s *Store) Put(k Key, b []byte) error {
	rel, err := k.rel()
	if err != nil {
		return err
	}
	size := int64(headerSize + len(b))
	if size > s.max {
		return fmt.Errorf("cache: put %v (%d bytes, bound %d): %w", k, size, s.max, ErrTooLarge)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.makeRoomLocked(size)
	s.reserved += size
	s.writes.Add(1)
	defer s.writes.Done()
	s.mu.Unlock()

	now := time.Now()
	tmp, werr := s.writeTemp(rel, b, now)

	s.mu.Lock()
	defer s.mu.Unlock()
	s.reserved -= size
	if werr != nil {
		return fmt.Errorf("cache: put %v: %w", k, werr)
	}
	if s.closed {
		os.Remove(tmp)
		return ErrClosed
	}
	if err := os.Rename(tmp, filepath.Join(s.data, rel)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("cache: put %v: %w", k, err)
	}
	if old := s.entries[k]; old != nil {
		s.dropLocked(old)
	}
	s.addLocked(k, rel, size, now)
	return nil
}

// Delete removes the entry of k, if any. Deleting a key the store does not hold is not an
// error. A Get racing with Delete returns the entry or ErrMiss, never a torn payload.
func (s *Store) Delete(k Key) error {
	rel, err := k.rel()
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	e := s.entries[k]
	if e == nil {
		return nil
	}
	s.dropLocked(e)
	if err := os.Remove(filepath.Join(s.data, rel)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("cache: delete %v: %w", k, err)
	}
	return nil
}

// Stats returns the store's counters and size.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.statsLocked()
}

func (s *Store) statsLocked() Stats {
	return Stats{
		Hits:         s.hits,
		Misses:       s.misses,
		Corrupt:      s.corrupt,
		Bytes:        s.bytes,
		Entries:      int64(len(s.entries)),
		Evictions:    s.evictions,
		Fetches:      s.fetches.Load(),
		BytesFetched: s.bytesFetched.Load(),
	}
}

// has reports whether k is present, without counting a hit or a miss.
func (s *Store) has(k Key) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.entries[k] != nil
}

// keysOf returns the keys of the entries of digest whose kind is one of kinds, in no
// particular order. It scans every entry: it is for rare work such as a purge.
func (s *Store) keysOf(digest string, kinds ...Kind) []Key {
	s.mu.Lock()
	defer s.mu.Unlock()
	var keys []Key
	for k := range s.entries {
		if k.Digest == digest && slices.Contains(kinds, k.Kind) {
			keys = append(keys, k)
		}
	}
	return keys
}

// noteFetch counts one RangeSource.Fetch that read n body bytes.
func (s *Store) noteFetch(n int64) {
	s.fetches.Add(1)
	s.bytesFetched.Add(n)
}

// writeTemp writes the entry file for rel to a temporary file beside its final place, with
// mtime t, and returns the temporary file's path.
func (s *Store) writeTemp(rel string, b []byte, t time.Time) (string, error) {
	dir := filepath.Join(s.data, filepath.Dir(rel))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	f, err := os.CreateTemp(dir, tmpPrefix+"*")
	if err != nil {
		return "", err
	}
	_, err1 := f.Write(header(rel, b))
	_, err2 := f.Write(b)
	err3 := f.Close()
	err4 := os.Chtimes(f.Name(), t, t)
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// touch writes t as the access and modification time of the entry file rel.
func (s *Store) touch(rel string, t time.Time) {
	err := os.Chtimes(filepath.Join(s.data, rel), t, t)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.log.Debug("cache: touch failed", "path", rel, "err", err)
	}
}
