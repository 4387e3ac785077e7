package cache

import (
	"cmp"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// addLocked indexes a new entry file as the most recently used of its kind.
func (s *Store) addLocked(k Key, rel string, size int64, atime time.Time) {
	s.gen++
	e := &entry{key: k, rel: rel, size: size, gen: s.gen, atime: atime, persisted: atime}
	e.elem = s.lru[k.Kind].PushBack(e)
	s.entries[k] = e
	s.bytes += size
}

// dropLocked forgets an entry without touching its file.
func (s *Store) dropLocked(e *entry) {
	s.lru[e.key.Kind].Remove(e.elem)
	delete(s.entries, e.key)
	s.bytes -= e.size
}

// removeLocked forgets an entry and deletes its file.
func (s *Store) removeLocked(e *entry) {
	s.dropLocked(e)
	err := os.Remove(filepath.Join(s.data, e.rel))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.log.Warn("cache: cannot delete entry", "key", e.key.String(), "err", err)
	}
}

// makeRoomLocked evicts entries until need more bytes fit within the bound, or nothing is left
// to evict: every chunk first (of either grain), then decoded ranges, documents, indexes,
// least recently used first within a kind.
func (s *Store) makeRoomLocked(need int64) {
	for s.bytes+s.reserved+need > s.max {
		victim := s.victimLocked()
		if victim == nil {
			return
		}
		s.removeLocked(victim)
		s.evictions++
	}
}

// victimLocked returns the entry to evict next, or nil if the store is empty: the least
// recently used entry of the lowest kind that has one, where the two chunk kinds count as
// one (the older of their least recently used entries).
func (s *Store) victimLocked() *entry {
	for k := range s.lru {
		f := s.lru[k].Front()
		if f == nil {
			continue
		}
		victim := f.Value.(*entry)
		if Kind(k) == KindChunk {
			if g := s.lru[KindFineChunk].Front(); g != nil && g.Value.(*entry).atime.Before(victim.atime) {
				victim = g.Value.(*entry)
			}
		}
		return victim
	}
	return nil
}

// load indexes the entry files under s.data, deleting temporary files and files the store did
// not write, and orders each kind by mtime (oldest first).
func (s *Store) load() error {
	removeTemps(s.dir, s.log)
	if err := checkVersion(s.dir, s.log); err != nil {
		return err
	}
	if err := os.MkdirAll(s.data, 0o700); err != nil {
		return err
	}
	type found struct {
		key   Key
		rel   string
		size  int64
		mtime time.Time
	}
	var all []found
	err := filepath.WalkDir(s.data, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path == s.data {
				return err
			}
			s.log.Warn("cache: skipping unreadable path", "path", path, "err", err)
			return nil
		}
		if d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(s.data, path)
		parts := strings.Split(rel, string(filepath.Separator))
		var k Key
		ok := len(parts) == 3 && d.Type().IsRegular() && !strings.HasPrefix(d.Name(), tmpPrefix)
		if ok {
			k, ok = parseName(parts[0], parts[1], parts[2])
		}
		var info fs.FileInfo
		if ok {
			info, err = d.Info()
			ok = err == nil && info.Size() >= headerSize
		}
		if !ok {
			if !strings.HasPrefix(d.Name(), tmpPrefix) {
				s.log.Info("cache: removing stray file", "path", path)
			}
			os.Remove(path)
			return nil
		}
		all = append(all, found{key: k, rel: rel, size: info.Size(), mtime: info.ModTime()})
		return nil
	})
	if err != nil {
		return err
	}
	slices.SortFunc(all, func(a, b found) int {
		return cmp.Or(a.mtime.Compare(b.mtime), strings.Compare(a.rel, b.rel))
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range all {
		s.addLocked(f.key, f.rel, f.size, f.mtime)
	}
	return nil
}
