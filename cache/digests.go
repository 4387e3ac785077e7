package cache

// Digests is a view of a Store that holds one kind of whole object by
// digest: the resolver's documents (KindDocument) or layer indexes
// (KindIndex). It is safe for concurrent use.
type Digests struct {
	s    *Store
	kind Kind
}

// Digests returns the view of s for objects of kind k.
func (s *Store) Digests(k Kind) Digests { return Digests{s: s, kind: k} }

// Get returns the object stored for digest, or an error wrapping ErrMiss.
func (d Digests) Get(digest string) ([]byte, error) {
	return d.s.Get(Key{Kind: d.kind, Digest: digest})
}

// Put stores the object of digest.
func (d Digests) Put(digest string, b []byte) error {
	return d.s.Put(Key{Kind: d.kind, Digest: digest}, b)
}
