// Package layers reads container image layer blobs without pulling them.
//
// A layer blob is a tar stream, plain or compressed with gzip or zstd. The format is
// sniffed from the blob's first bytes ([DetectFormat]); a descriptor's media type is
// never trusted.
//
// # Indexing
//
// [BuildIndex] makes one streaming pass over a blob. It verifies the blob's sha256
// against its digest, decompresses it, parses the tar stream with archive/tar (PAX
// records, GNU long names and GNU or PAX sparse files included), and records every
// entry with the offset of its data in the uncompressed stream, together with restart
// points for later random reads:
//
//   - gzip: a checkpoint (compressed offset and bit, uncompressed offset, the 32 KiB
//     window before it) at the first deflate block boundary after about every span of
//     output (1 MiB, wider for very large layers so that the index stays near 1% of the
//     uncompressed size); see package layers/inflate.
//   - zstd: the start of every frame, kept about a span apart. A single-frame stream has
//     only one restart point (offset 0): reads far into it decode from the start, and
//     the decoded bytes are therefore kept as chunks in a [DecodedCache]. Single-frame
//     zstd is exempt from the one-span cost figure below.
//   - tar: entry offsets point straight into the blob.
//
// An [Index] marshals to a compact binary form; an [Indexer] builds each digest's index
// once (concurrent callers share one pass) and keeps it in an [IndexStore].
//
// # Reading
//
// A [Layer] reads an entry's bytes. For a compressed layer, a read inflates from the
// nearest restart point at or before the wanted offset: about one span of work, never
// the stream from its start. A few live decoders stay positioned where the last reads
// ended and the last few decoded spans stay in memory, so that reading every file of a
// layer costs about one decode of it.
//
// # Errors
//
// A layer that cannot be read whole (truncated, garbage, a malformed header in the
// middle, a digest mismatch) fails [BuildIndex] with an error that names the digest:
// the caller treats the whole layer as unreadable.
//
// # Concurrency
//
// [Index] values are immutable after they are built or unmarshalled. [Layer] and
// [Indexer] are safe for concurrent use.
package layers
