package fs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/regfs/regfs/resolver"
)

func TestErrno(t *testing.T) {
	tests := []struct {
		name    string
		err     error
		want    syscall.Errno
		wantLog bool // the cause is logged (EIO, EACCES)
	}{
		{"nil", nil, 0, false},
		{"not found", resolver.ErrNotFound, syscall.ENOENT, false},
		{"wrapped not found", fmt.Errorf("tag 1.0 of demo/hello: %w", resolver.ErrNotFound), syscall.ENOENT, false},
		{"denied", resolver.ErrDenied, syscall.EACCES, true},
		{"wrapped denied", fmt.Errorf("manifest: %w", fmt.Errorf("HTTP 403: %w", resolver.ErrDenied)), syscall.EACCES, true},
		{"unavailable", resolver.ErrUnavailable, syscall.EIO, true},
		{"wrapped unavailable", fmt.Errorf("blob sha256:ab: %w", resolver.ErrUnavailable), syscall.EIO, true},
		{"invalid", resolver.ErrInvalid, syscall.EIO, true},
		{"wrapped invalid", fmt.Errorf("index: %w", resolver.ErrInvalid), syscall.EIO, true},
		{"other", errors.New("gzip: invalid header"), syscall.EIO, true},
		{"deadline", context.DeadlineExceeded, syscall.EIO, true},
		{"canceled", context.Canceled, syscall.EINTR, false},
		{"wrapped canceled", fmt.Errorf("read chunk 3: %w", context.Canceled), syscall.EINTR, false},
		{"canceled joined with not found", errors.Join(resolver.ErrNotFound, context.Canceled), syscall.EINTR, false},
		{"errno ENOENT", syscall.ENOENT, syscall.ENOENT, false},
		{"errno ENOTDIR in PathError", &os.PathError{Op: "lookup", Path: "etc/x", Err: syscall.ENOTDIR}, syscall.ENOTDIR, false},
		{"errno ELOOP wrapped", fmt.Errorf("follow: %w", syscall.ELOOP), syscall.ELOOP, false},
		{"errno EIO passes and is logged", fmt.Errorf("read: %w", syscall.EIO), syscall.EIO, true},
		{"errno EACCES from below is EIO", syscall.EACCES, syscall.EIO, true},
		{"connection reset is EIO", &os.SyscallError{Syscall: "read", Err: syscall.ECONNRESET}, syscall.EIO, true},
		{"unavailable wrapping a reset is EIO", fmt.Errorf("%w: %w", resolver.ErrUnavailable, syscall.ECONNRESET), syscall.EIO, true},
		{"fs.ErrNotExist is no errno", fmt.Errorf("open: %w", fs.ErrNotExist), syscall.EIO, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
			got := errno(log, tt.err, "read failed", "repo", "demo/hello", "digest", "sha256:ab", "off", int64(4096))
			if got != tt.want {
				t.Errorf("errno(%v) = %v (%d), want %v (%d)", tt.err, got, got, tt.want, tt.want)
			}
			recs := errnoRecords(t, &buf)
			if !tt.wantLog {
				if len(recs) != 0 {
					t.Errorf("errno(%v) logged %d records, want none: %v", tt.err, len(recs), recs)
				}
				return
			}
			if len(recs) != 1 {
				t.Fatalf("errno(%v) logged %d records, want 1: %v", tt.err, len(recs), recs)
			}
			r := recs[0]
			wantAttrs := map[string]any{
				"msg":    "read failed",
				"repo":   "demo/hello",
				"digest": "sha256:ab",
				"off":    float64(4096),
				"err":    tt.err.Error(),
				"errno":  tt.want.Error(),
			}
			for k, want := range wantAttrs {
				if r[k] != want {
					t.Errorf("log record %q = %v, want %v (record %v)", k, r[k], want, r)
				}
			}
			if lvl := r["level"]; lvl != "WARN" && lvl != "ERROR" {
				t.Errorf("log level = %v, want WARN or ERROR", lvl)
			}
		})
	}
}

// TestContentErrno: for the content of a listed name, what the registry no longer has
// is EIO (logged), not ENOENT; everything else maps as errno maps it.
func TestContentErrno(t *testing.T) {
	tests := []struct {
		name    string
		err     error
		want    syscall.Errno
		wantLog bool
	}{
		{"not found", resolver.ErrNotFound, syscall.EIO, true},
		{"wrapped not found", fmt.Errorf("layer 1 (sha256:ab) of demo/hello: %w", resolver.ErrNotFound), syscall.EIO, true},
		{"canceled joined with not found", errors.Join(resolver.ErrNotFound, context.Canceled), syscall.EINTR, false},
		{"denied", resolver.ErrDenied, syscall.EACCES, true},
		{"tree ENOENT", syscall.ENOENT, syscall.ENOENT, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			log := slog.New(slog.NewJSONHandler(&buf, nil))
			if got := contentErrno(log, tt.err, "rootfs unavailable"); got != tt.want {
				t.Errorf("contentErrno(%v) = %v, want %v", tt.err, got, tt.want)
			}
			if recs := errnoRecords(t, &buf); (len(recs) == 1) != tt.wantLog || len(recs) > 1 {
				t.Errorf("contentErrno(%v) logged %d records, want a record: %v", tt.err, len(recs), tt.wantLog)
			}
		})
	}
}

// errnoRecords decodes the JSON log lines in buf.
func errnoRecords(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var recs []map[string]any
	for line := range strings.Lines(buf.String()) {
		var r map[string]any
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		recs = append(recs, r)
	}
	return recs
}
