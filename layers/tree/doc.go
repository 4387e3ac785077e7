// Package tree merges the layers of one image platform into a single file tree with OCI
// layer semantics.
//
// # Input and output
//
// [Merge] takes each layer's tar entries in archive order, base layer first, and returns an
// immutable [Tree] of [Node]s addressed by [NodeID]. A regular file's node records which
// layer and which entry of that layer hold its bytes ([Node.Layer], [Node.Entry]); the
// caller reads them from there. The tree never reads file data itself.
//
// # Semantics
//
// The rules are those of the OCI image-spec, with containerd's applier as the reference
// where the spec is silent and the regfs design (section 4) deciding hostile input:
//
//   - Names are clamped inside the root with securejoin semantics: "..", absolute names
//     and symlinked parent directories all resolve inside the tree ("sl -> /etc" then
//     "sl/f" creates /etc/f and sl stays a symlink). Symlink chains longer than 255 hops,
//     names with NUL bytes, components over 255 bytes, names over 4096 bytes and names
//     ending in ".." are skipped with a warning. An entry naming the root is ignored.
//   - ".wh.<name>" removes <name> of the lower layers; ".wh..wh..opq" in a directory hides
//     that directory's lower contents. Entries are applied in archive order, but a marker
//     spares everything its own layer wrote (entries, hardlink names, and the directories
//     leading to them), so it acts as if applied before the layer's other entries
//     wherever it sits, and it resolves its directory in the layer's own tree (a lower
//     symlink the layer replaced by a directory is not followed). ".wh..", a bare ".wh."
//     and whiteouts naming an ancestor of their own path are ignored. Whiteout files never
//     appear in the tree.
//   - Later entries win, also within one layer; a directory entry over a directory updates
//     its metadata and keeps its children; anything else replaces the old node (a
//     directory's whole subtree). Missing parent directories are created (0755, root).
//   - A hardlink shares its target's node (one NodeID, Nlink counted). The target is
//     resolved in the tree as it stands when the entry is applied, clamped like a name,
//     its last component not followed (as link(2)); a missing target or a directory makes
//     the entry skipped with a warning. Replacing or whiting out one name of a hardlinked
//     file removes that name only. (One ill-formed case is order dependent, as in
//     containerd: a link made before its own layer whites out the lower target keeps the
//     file; made after, it finds no target.) The link entry's own metadata is ignored.
//
// Warnings go to the injected *slog.Logger and name the layer index, entry index and name.
//
// # Identity and concurrency
//
// Node IDs are assigned depth-first with children in name order after the merge, so they
// are a pure function of the input. A Tree is immutable once built and safe for concurrent
// use; callers must not modify the Nodes it returns.
package tree
