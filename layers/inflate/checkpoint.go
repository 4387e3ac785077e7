package inflate

import (
	"errors"
	"fmt"
)

// WindowSize is the largest deflate window: the most output a checkpoint keeps.
const WindowSize = 32 << 10

var (
	// ErrHeader reports a malformed gzip member header.
	ErrHeader = errors.New("inflate: invalid gzip header")
	// ErrChecksum reports a member whose CRC-32 or ISIZE does not match its data.
	ErrChecksum = errors.New("inflate: gzip checksum mismatch")
	// ErrCheckpoint reports a checkpoint that cannot be valid.
	ErrCheckpoint = errors.New("inflate: invalid checkpoint")
	// ErrSelfCheck reports that the deflate library's checkpoints failed the
	// start-up self-check: nothing in this package can be trusted then.
	ErrSelfCheck = errors.New("inflate: self-check of deflate checkpoints failed")
)

// Checkpoint is a place in a gzip file where decompression can restart.
type Checkpoint struct {
	In     int64  // byte offset in the gzip FILE (headers included) of the next input byte
	Bit    uint8  // bits of the byte at In already consumed (0-7)
	Out    int64  // offset in the uncompressed stream (all members concatenated)
	Window []byte // up to 32 KiB of output before Out (empty at a member start)
	Header bool   // true: In is the start of a gzip member header (Window unused)

	// CRC is the CRC-32 of the member's output before Out (0 at a member start).
	CRC uint32
	// MemberLen is the length of the member's output before Out (0 at a member start).
	MemberLen int64
}

// validate reports whether cp could have come from Scan.
func (cp *Checkpoint) validate() error { return cp.validateWindow(len(cp.Window)) }

// validateWindow is validate for a checkpoint whose window has winLen bytes.
func (cp *Checkpoint) validateWindow(winLen int) error {
	switch {
	case cp.In < 0 || cp.Out < 0 || cp.MemberLen < 0:
		return fmt.Errorf("%w: negative offset (in %d, out %d, member %d)", ErrCheckpoint, cp.In, cp.Out, cp.MemberLen)
	case cp.Bit > 7:
		return fmt.Errorf("%w: bit %d", ErrCheckpoint, cp.Bit)
	case winLen > WindowSize:
		return fmt.Errorf("%w: window of %d bytes", ErrCheckpoint, winLen)
	case cp.MemberLen > cp.Out:
		return fmt.Errorf("%w: member output %d beyond offset %d", ErrCheckpoint, cp.MemberLen, cp.Out)
	case cp.Header && (cp.Bit != 0 || winLen != 0 || cp.CRC != 0 || cp.MemberLen != 0):
		return fmt.Errorf("%w: member-start checkpoint with inflate state", ErrCheckpoint)
	case !cp.Header && int64(winLen) != min(cp.MemberLen, WindowSize):
		return fmt.Errorf("%w: window of %d bytes after %d bytes of member output", ErrCheckpoint, winLen, cp.MemberLen)
	}
	return nil
}
