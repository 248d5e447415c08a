package netstate

// keyTable interns the label sets of the live connections: each live
// connection holds a 4-byte id instead of its label set (104 bytes for the
// collector's), since many connections share one (at 164,000 live
// connections the shared table of live connections was 59 MB, a quarter
// of the exporter's heap: BENCHMARKS.md §13). A label set is held while a
// live connection refers to it: unref of the last reference frees its id.
// The state's lock guards it.
type keyTable[K comparable] struct {
	ids  map[K]uint32
	keys []K
	refs []uint32
	free []uint32
	// gens[id] changes when id is freed: a cache by id (client.byID)
	// knows from it that an id it holds now names another label set. A
	// reset starts them again, but it happens without clients
	// (State.forgetLive), so no client's cache outlives it.
	gens []uint32
}

func newKeyTable[K comparable]() keyTable[K] {
	return keyTable[K]{ids: make(map[K]uint32)}
}

// ref returns k's id, interned if new, with one more reference.
func (t *keyTable[K]) ref(k K) uint32 {
	id, ok := t.ids[k]
	if !ok {
		if n := len(t.free); n > 0 {
			id = t.free[n-1]
			t.free = t.free[:n-1]
			t.keys[id] = k
		} else {
			id = uint32(len(t.keys))
			t.keys = append(t.keys, k)
			t.refs = append(t.refs, 0)
			t.gens = append(t.gens, 0)
		}
		t.ids[k] = id
	}
	t.refs[id]++
	return id
}

// unref drops a reference to id; the last one frees it.
func (t *keyTable[K]) unref(id uint32) {
	if t.refs[id]--; t.refs[id] > 0 {
		return
	}
	delete(t.ids, t.keys[id])
	var zero K
	t.keys[id] = zero // no string kept alive by a free id
	t.gens[id]++
	t.free = append(t.free, id)
}

// key returns the label set of id.
func (t *keyTable[K]) key(id uint32) K { return t.keys[id] }

// len is how many label sets are held.
func (t *keyTable[K]) len() int { return len(t.ids) }

// reset forgets everything (no live connection is held), releasing the
// memory of a large table.
func (t *keyTable[K]) reset() {
	if len(t.keys) > 4096 {
		*t = newKeyTable[K]()
		return
	}
	clear(t.ids)
	clear(t.keys) // no label set's strings kept alive by the array
	t.keys, t.refs, t.free, t.gens = t.keys[:0], t.refs[:0], t.free[:0], t.gens[:0]
}
