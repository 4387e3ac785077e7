package cache

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

const (
	// formatVersion is the on-disk format; a store holding another one is wiped at Open.
	// The finechunk kind directory came without a bump: a store written before it holds
	// none and reads its chunk files as before, and an older regfs removes the directory's
	// files as stray ones; no file is ever read as another key.
	formatVersion = 1
	versionName   = "VERSION"
	lockName      = "LOCK"
	// tmpPrefix starts the names of temporary files; Open removes any it finds.
	tmpPrefix = ".tmp-"
)

// ErrLocked is returned by Open when another Store, in this process or another, has the
// directory open.
var ErrLocked = errors.New("cache: directory in use")

// dataDirName is the directory that holds the entries of this format version.
func dataDirName() string { return "v" + strconv.Itoa(formatVersion) }

// versionText is the content of the version file for this format.
func versionText() string { return "regfs-cache " + strconv.Itoa(formatVersion) + "\n" }

// lockDir takes an exclusive flock on dir's lock file and writes our pid into it. The lock
// lasts until the file is closed.
func lockDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, lockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("cache: open lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			holder := ""
			if b, rerr := os.ReadFile(path); rerr == nil && len(b) > 0 {
				holder = " (pid " + strings.TrimSpace(string(b)) + ")"
			}
			return nil, fmt.Errorf("%w: cache directory %s is being used by another regfs%s; "+
				"give each regfs its own cache directory", ErrLocked, dir, holder)
		}
		return nil, fmt.Errorf("cache: lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

// unlockDir releases the lock taken by lockDir.
func unlockDir(f *os.File) error {
	if err := f.Truncate(0); err != nil {
		f.Close()
		return fmt.Errorf("cache: release lock: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("cache: release lock: %w", err)
	}
	return nil
}

// checkVersion makes dir hold the current format: when the version file is missing or names
// another version, it removes every data directory ("v<n>") and writes the version file.
// Files of other names are never touched.
func checkVersion(dir string, log *slog.Logger) error {
	path := filepath.Join(dir, versionName)
	got, err := os.ReadFile(path)
	switch {
	case err == nil && string(got) == versionText():
		return nil
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("cache: read version: %w", err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("cache: wipe old format: %w", err)
	}
	for _, e := range ents {
		if !isDataDirName(e.Name()) {
			continue
		}
		log.Info("cache: wiping data of another format version",
			"dir", dir, "found", strings.TrimSpace(string(got)), "want", formatVersion, "wipe", e.Name())
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("cache: wipe old format: %w", err)
		}
	}
	tmp, err := os.CreateTemp(dir, tmpPrefix+"version-*")
	if err != nil {
		return fmt.Errorf("cache: write version: %w", err)
	}
	_, werr := tmp.WriteString(versionText())
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("cache: write version: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("cache: write version: %w", err)
	}
	return nil
}

// isDataDirName reports whether name is a data directory of some format version: "v<digits>".
func isDataDirName(name string) bool {
	if len(name) < 2 || name[0] != 'v' {
		return false
	}
	for _, c := range name[1:] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// removeTemps deletes leftover temporary files directly in dir (the version file's).
func removeTemps(dir string, log *slog.Logger) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), tmpPrefix) && !e.IsDir() {
			log.Debug("cache: removing leftover temporary file", "path", filepath.Join(dir, e.Name()))
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}
