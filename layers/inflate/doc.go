// Package inflate reads gzip files (one or many members) from the middle.
//
// Scan decompresses a whole gzip file once and reports checkpoints: places where
// decompression can restart, each made of a compressed position (byte and bit), an
// uncompressed position and the 32 KiB of output before it (the deflate window).
// Resume restarts from one of them, so that a read of any byte range costs about one
// span of work and needs only that span's compressed bytes.
//
// # Checkpoints
//
// A checkpoint is reported at the start of every gzip member (Header set, no window:
// the header is parsed again on resume) and at the first deflate block boundary after
// every span bytes of output since the previous checkpoint. Span is the caller's
// choice: about 1 MiB for ordinary layers, wider for huge ones, so that the stored
// windows (compressed by MarshalCheckpoints) stay near 1% of the uncompressed size.
//
// # The klauspost/compress offset trap
//
// Block boundaries come from klauspost/compress/flate (WithEobCallback, WithResumeFrom).
// In v1.20.4 the compressed offset it reports after a stored block is too large by the
// whole bytes that were still in its bit buffer, and the error accumulates with every
// stored block. This package does not trust that offset. It feeds flate a
// *bufio.Reader of its own (which flate uses directly, on its fast path) over a
// counting reader, so the exact number of bytes flate has consumed is known at every
// callback. After a stored block flate's bit buffer is empty, so the reported offset
// minus the consumed count is exactly the drift accumulated so far; after a Huffman
// block the same difference can only be smaller (bits still buffered). The drift is
// therefore the running maximum of that difference, measured rather than assumed: it
// is zero on a library without the bug, and correct on one with it. A self-check runs
// once per process, before the first Scan or Resume: a built-in stream that mixes
// Huffman and stored blocks is scanned with a checkpoint at every block and resumed
// from each; if any checkpoint fails, every Scan and Resume returns ErrSelfCheck.
//
// Checkpoints hold true file offsets (gzip headers included), so an index stored by
// one version of the library stays valid with another.
//
// # Integrity
//
// Scan verifies every member's CRC-32 and ISIZE and the optional header CRC. A
// checkpoint also carries the CRC-32 and length of its member's output before it, so
// a Resume that reads through the end of a member verifies that member too. Corrupt
// or truncated input gives an error, never a panic.
//
// # Concurrency
//
// Scan and Resume share nothing: any number may run at once. A reader returned by
// Resume is not safe for concurrent use.
package inflate
