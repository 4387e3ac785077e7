package tree

import (
	"fmt"
	"testing"
)

// benchLayers returns about n entries in three layers shaped like a distribution image:
// a base of 100-file directories, then updates, deletions and an opaque directory.
func benchLayers(n int) [][]Entry {
	var base, upd, top []Entry
	dirs := n * 8 / 10 / 100
	for d := range dirs {
		dn := fmt.Sprintf("usr/share/pkg%04d/", d)
		base = append(base, dir(dn))
		for f := range 100 {
			base = append(base, reg(fmt.Sprintf("%sfile%03d.txt", dn, f)))
		}
	}
	for d := range dirs / 5 {
		dn := fmt.Sprintf("usr/share/pkg%04d/", d*5)
		upd = append(upd, dir(dn), reg(dn+".wh.file000.txt"), hard(dn+"link", dn+"file001.txt"))
		for f := range 50 {
			upd = append(upd, reg(fmt.Sprintf("%sfile%03d.txt", dn, f*2)))
		}
	}
	for d := range dirs / 10 {
		dn := fmt.Sprintf("usr/share/pkg%04d/", d*10+1)
		top = append(top, dir(dn), reg(dn+".wh..wh..opq"), reg(dn+"only"))
	}
	return [][]Entry{base, upd, top}
}

func BenchmarkMerge100k(b *testing.B) {
	layers := benchLayers(100_000)
	total := 0
	for _, l := range layers {
		total += len(l)
	}
	b.ReportMetric(float64(total), "entries")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Merge(layers, nil); err != nil {
			b.Fatal(err)
		}
	}
}
