package netstate

import "testing"

// Ids are shared by equal label sets, freed with their last reference and
// reused; a freed id keeps nothing.
func TestKeyTableSharesAndFrees(t *testing.T) {
	kt := newKeyTable[string]()
	a1, a2, b := kt.ref("a"), kt.ref("a"), kt.ref("b")
	if a1 != a2 || a1 == b || kt.len() != 2 {
		t.Fatalf("ids a %d %d, b %d, %d held", a1, a2, b, kt.len())
	}
	kt.unref(a1)
	if kt.len() != 2 || kt.key(a2) != "a" {
		t.Fatalf("a freed with a reference left (%d held)", kt.len())
	}
	kt.unref(a2)
	if kt.len() != 1 || kt.keys[a1] != "" {
		t.Fatalf("a kept after its last reference: %d held, slot %q", kt.len(), kt.keys[a1])
	}
	if c := kt.ref("c"); c != a1 || kt.key(c) != "c" {
		t.Errorf("c got id %d (%q), want a's freed id %d", c, kt.key(c), a1)
	}
	kt.reset()
	if kt.len() != 0 || kt.ref("d") != 0 {
		t.Errorf("after reset: %d held", kt.len())
	}
}
