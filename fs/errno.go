package fs

import (
	"context"
	"errors"
	"log/slog"
	"syscall"

	"github.com/regfs/regfs/resolver"
)

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
	case errors.As(err, &e):
		// An errno from below (ENOENT from a merged tree, say) passes through.
	default:
		e = syscall.EIO
	}
	if e == syscall.EIO || e == syscall.EACCES {
		log.Warn(msg, append(attrs, "err", err, "errno", e.Error())...)
	}
	return e
}
