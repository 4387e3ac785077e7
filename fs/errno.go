package fs

import (
	"context"
	"errors"
	"log/slog"
	"syscall"

	"github.com/regfs/regfs/resolver"
)

// passThrough reports whether an errno from below keeps its meaning at the
// FUSE boundary; any other (ECONNRESET from a socket, EACCES from a cache
// file) would mislead the caller and becomes EIO.
func passThrough(e syscall.Errno) bool {
	switch e {
	case syscall.ENOENT, syscall.ENOTDIR, syscall.EISDIR, syscall.ELOOP,
		syscall.ENAMETOOLONG, syscall.ENODATA, syscall.ERANGE, syscall.EINVAL, syscall.EIO:
		return true
	}
	return false
}

// errno maps an error from the packages below to the errno a FUSE caller
// sees. It is the one place that does so. Causes of EIO are logged here, once,
// with the attributes given.
func errno(log *slog.Logger, err error, msg string, attrs ...any) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	switch {
	case errors.Is(err, context.Canceled):
		return syscall.EINTR
	case errors.Is(err, resolver.ErrNotFound):
		return syscall.ENOENT
	case errors.Is(err, resolver.ErrDenied):
		e = syscall.EACCES
	case errors.Is(err, resolver.ErrUnavailable), errors.Is(err, resolver.ErrInvalid):
		e = syscall.EIO
	case errors.As(err, &e) && passThrough(e):
		// A file system answer from below (ENOTDIR from a tree walk, say).
	default:
		// Anything else, network errnos such as ECONNRESET included, is EIO.
		e = syscall.EIO
	}
	if e == syscall.EIO || e == syscall.EACCES {
		log.Warn(msg, append(attrs, "err", err, "errno", e.Error())...)
	}
	return e
}

// contentErrno is errno for the content of a name that exists: a platform's rootfs/,
// a file in it, a document file. There a manifest or blob the registry answers 404 for
// is an I/O error, not ENOENT, which would make a listed directory look empty (ls
// takes ENOENT from readdir for a directory removed meanwhile) and a listed file look
// absent.
func contentErrno(log *slog.Logger, err error, msg string, attrs ...any) syscall.Errno {
	if errors.Is(err, resolver.ErrNotFound) && !errors.Is(err, context.Canceled) {
		log.Warn(msg, append(attrs, "err", err, "errno", syscall.EIO.Error())...)
		return syscall.EIO
	}
	return errno(log, err, msg, attrs...)
}
