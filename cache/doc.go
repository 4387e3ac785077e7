// Package cache is regfs's content-addressed, size-bounded on-disk store, and the chunked
// random-access reader of remote blobs that fills it.
//
// # Store
//
// A [Store] keeps whole small blobs (documents, layer indexes) and ranges of large blobs
// (chunks) under one directory, addressed by [Key] (a kind, a digest and a chunk number),
// never by URL. Everything stored is immutable: a key names its content. The layout is
//
//	<dir>/VERSION                         format version; another version wipes the store
//	<dir>/LOCK                            flock'ed while a Store is open
//	<dir>/v1/<kind>/<aa>/<alg>-<hex>.<n>  one entry: a 16-byte header, then the payload
//
// where <aa> is the first two characters of the digest's encoded part. Writes go to a temporary
// file in the entry's directory and are renamed into place, so a reader sees a whole entry or
// none. Each entry carries a CRC-32C of its key and payload; an entry that fails the check (a
// torn write after a crash, a flipped bit) is a miss and is deleted, never served. Nothing is
// fsynced: after a crash the store may lose recent entries, never serve wrong bytes.
//
// # Eviction
//
// The store keeps the total size of its files (headers included) within the bound given to
// [Open]. Space is reserved before a temporary file is written, so the bound holds on disk at
// every moment, except while concurrent Puts together need more than the evictable entries
// free. Eviction goes by [Kind]: every chunk (of either grain, the least recently used of
// both first) goes before any decoded range, those before any document, those before any
// index; within a kind, the least recently used entry goes first.
// Access times survive restarts: a Get records the access in memory and on the file's mtime at
// most once a minute per entry, Close writes the rest, and Open rebuilds the order from mtimes.
//
// # Blobs
//
// A [Blob] reads a remote blob through the store in fixed, aligned chunks (1 MiB by default).
// A ReadAt asks the store for each chunk it covers; the missing chunks are fetched from the
// [RangeSource], adjacent ones in one request.
//
// Two grains serve a layer. Its index pass streams the blob once in 1 MiB chunks
// ([KindChunk]; a layer indexed from its TOC reads only its footer and TOC, in fine
// chunks); the reads after it use a Blob of fine chunks (32 KiB, [KindFineChunk])
// made [WithCoarse], which takes a chunk's bytes from the pass's coarse chunk while the
// store holds it (reading that file once for all its fine chunks) and otherwise fetches
// only the fine chunks the read needs. A read after eviction then costs the registry about
// the bytes it decodes instead of whole megabytes. Concurrent reads of a chunk that is being fetched
// wait for that fetch rather than starting another. A fetch is shared work: it runs on
// context.WithoutCancel of the context of the read that started it (the RangeSource bounds it
// with its own stall timeout), and a reader whose context ends returns ctx.Err() alone while
// the fetch goes on for the others and fills the cache. Fetched chunks are served from memory,
// so a read returns the right bytes even when the store is too small to keep them.
//
// A body that fails part-way with a reset connection or an early end is fetched again from
// its first chunk not yet delivered, at most twice more and only within half a second of the
// fetch's start (a quick failure); a stall or a context error is not retried. With [WithVerify], every chunk fetched from the source is checked (against the
// digests a layer index recorded) before it is stored or served: a chunk that fails is
// dropped and its reads fail with an error wrapping [ErrCorrupt]. Chunks read back from the
// store are protected by its checksum. [Blob.Purge] deletes a blob's chunks, for a caller
// that found the blob wrong as a whole after a full pass.
//
// [Blob.Reader] streams a blob sequentially for one-pass work such as building a layer index:
// it reads ahead several chunks per request, two requests at a time, and fills the cache too.
//
// # Concurrency
//
// [Store] and [Blob] are safe for concurrent use. A Store is meant to be the only user of its
// directory: a second Open of the same directory, from this process or another, fails.
package cache
