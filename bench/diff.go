package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/regfs/regfs/internal/fixture"
)

// diffImage is the diff figure's image: two platforms, each the Debian rootfs
// layer (shared: one blob) under a small layer of its own.
type diffImage struct {
	repo, tag  string
	ref        string // on the counted host, for crane
	platforms  [2]string
	base       string // the shared layer's digest
	baseSize   int64
	distinct   int64    // bytes of every distinct blob: base, both tops, both configs
	wantLines  []string // lines diff -r must print (roots as A and B)
	arches     [2]string
	topDigests [2]string
}

// buildDiffImage builds and pushes bench/debian:diff (uncounted).
func buildDiffImage(ctx context.Context, b *bench) (*diffImage, error) {
	d := &diffImage{repo: b.img.repo, tag: "diff", platforms: [2]string{"linux/arm64", "linux/amd64"}, arches: [2]string{"arm64", "amd64"}}
	d.ref = b.e.host + "/" + d.repo + ":" + d.tag
	base, err := fixture.Layer(fixture.Gzip, fixture.OCI, b.img.rootfsEntries...)
	if err != nil {
		return nil, err
	}
	h, err := base.Digest()
	if err != nil {
		return nil, fmt.Errorf("base layer digest: %w", err)
	}
	d.base = h.String()
	if d.baseSize, err = base.Size(); err != nil {
		return nil, fmt.Errorf("base layer size: %w", err)
	}
	d.distinct = d.baseSize
	var imgs []v1.Image
	for i, arch := range d.arches {
		top, err := fixture.Layer(fixture.Gzip, fixture.OCI,
			fixture.File("etc/motd", "regfs bench: the "+arch+" top layer changed this file\n", 0o644),
			fixture.File("etc/regfs-platform", arch+"\n", 0o644),
			fixture.Dir("opt/regfs-top", 0o755),
			fixture.File("opt/regfs-top/"+arch+".txt", "only in "+arch+"\n", 0o644),
		)
		if err != nil {
			return nil, err
		}
		im, err := fixture.Image(fixture.OCI, fixture.Platform(d.platforms[i]), base, top)
		if err != nil {
			return nil, err
		}
		size, err := top.Size()
		if err != nil {
			return nil, fmt.Errorf("top layer size: %w", err)
		}
		cfg, err := im.RawConfigFile()
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		th, _ := top.Digest()
		d.topDigests[i] = th.String()
		d.distinct += size + int64(len(cfg))
		imgs = append(imgs, im)
	}
	if err := b.e.pushIndex(ctx, d.repo, d.tag, imgs...); err != nil {
		return nil, err
	}
	d.wantLines = []string{
		"diff -r --no-dereference A/etc/motd B/etc/motd",
		"diff -r --no-dereference A/etc/regfs-platform B/etc/regfs-platform",
		"Only in A/opt/regfs-top: arm64.txt",
		"Only in B/opt/regfs-top: amd64.txt",
	}
	return d, nil
}

// benchDiff measures issue 4's diff figure: `diff -r` of the two platforms'
// rootfs directories through one fresh regfs mount (empty cache), against
// `crane export` of each platform, `tar -x` of both and `diff -r` of the
// trees, interleaved. Both diffs use --no-dereference: the rootfs holds
// absolute symlinks, which a dereferencing diff would follow to the host's
// files on both sides.
func benchDiff(ctx context.Context, b *bench) ([]row, error) {
	d, err := buildDiffImage(ctx, b)
	if err != nil {
		return nil, err
	}
	b.log.Info("diff image pushed", "ref", d.ref, "base", d.base, "base_size", d.baseSize, "distinct_bytes", d.distinct)
	var regfs, crane []time.Duration
	var regfsBytes, baseBytes, craneBytes []int64
	var regfsOut, craneOut string
	for i := range b.newPairs() {
		cache := filepath.Join(b.o.work, fmt.Sprintf("diff-cache-%d", i))
		p, err := b.e.mount(ctx, cache)
		if err != nil {
			return nil, err
		}
		ra, rb := p.rootfsOf(d.repo, d.tag, d.platforms[0]), p.rootfsOf(d.repo, d.tag, d.platforms[1])
		b.e.take()
		t, _, out, err := timed(ctx, fmt.Sprintf("diff -r --no-dereference %s %s || [ $? -eq 1 ]", shq(ra), shq(rb)), "")
		c := b.e.take()
		if _, uerr := p.unmount(); err == nil {
			err = uerr
		}
		_ = os.RemoveAll(cache)
		if err != nil {
			return nil, fmt.Errorf("regfs diff: %w (log: %s)", err, tail(p.logPath))
		}
		if regfsOut, err = checkDiff(out, ra, rb, d.wantLines); err != nil {
			return nil, fmt.Errorf("regfs diff: %w", err)
		}
		var base int64
		for _, r := range c.Requests {
			if r.Method == "GET" && r.Ref == d.base {
				base += r.Bytes
			}
		}
		regfs, regfsBytes, baseBytes = append(regfs, t), append(regfsBytes, c.BlobBytes), append(baseBytes, base)
		b.log.Info("diff regfs", "run", i, "took", t.Round(time.Millisecond), "requests", c.String(), "base_bytes", base)

		dir := filepath.Join(b.o.work, fmt.Sprintf("diff-crane-%d", i))
		ca, cb := filepath.Join(dir, "a"), filepath.Join(dir, "b")
		if err := os.MkdirAll(ca, 0o755); err != nil {
			return nil, fmt.Errorf("crane directory: %w", err)
		}
		if err := os.MkdirAll(cb, 0o755); err != nil {
			return nil, fmt.Errorf("crane directory: %w", err)
		}
		export := func(platform, into string) string {
			return fmt.Sprintf("%s export --insecure --platform %s %s - | tar -x -C %s", shq(b.o.crane), platform, shq(d.ref), shq(into))
		}
		script := fmt.Sprintf("%s && %s && { diff -r --no-dereference %s %s || [ $? -eq 1 ]; }",
			export(d.platforms[0], ca), export(d.platforms[1], cb), shq(ca), shq(cb))
		t, _, out, err = timed(ctx, script, "")
		c = b.e.take()
		_ = os.RemoveAll(dir)
		if err != nil {
			return nil, fmt.Errorf("crane export and diff: %w", err)
		}
		if craneOut, err = checkDiff(out, ca, cb, d.wantLines); err != nil {
			return nil, fmt.Errorf("crane diff: %w", err)
		}
		if regfsOut != craneOut {
			return nil, fmt.Errorf("diff -r through regfs and of crane's trees differ:\nregfs:\n%s\ncrane:\n%s", regfsOut, craneOut)
		}
		crane, craneBytes = append(crane, t), append(craneBytes, c.BlobBytes)
		b.log.Info("diff crane", "run", i, "took", t.Round(time.Millisecond), "requests", c.String())
	}
	mr, mc := median(regfs), median(crane)
	ratio := mr.Seconds() / mc.Seconds()
	maxBase, maxAll := slicesMax(baseBytes), slicesMax(regfsBytes)
	return []row{
		{figure: "diff: diff -r of 2 platforms through a fresh regfs mount", measured: fmtDur(mr),
			detail: fmt.Sprintf("%s; diff output (%d lines, roots as A and B):\n    %s", durs(regfs), strings.Count(regfsOut, "\n"),
				strings.ReplaceAll(strings.TrimSpace(regfsOut), "\n", "\n    "))},
		{figure: "diff: crane export both platforms | tar -x, diff -r", measured: fmtDur(mc), detail: durs(crane)},
		{figure: "diff: ratio regfs / crane", measured: fmt.Sprintf("%.2f", ratio), target: "<= 0.8", verdict: verdict(ratio <= 0.8)},
		{figure: fmt.Sprintf("diff: shared base layer (%s), bytes fetched by regfs, max", mb(d.baseSize)), measured: mb(maxBase),
			target: "once (<= its size)", verdict: verdict(maxBase <= d.baseSize && maxBase > 0), detail: "per run: " + joinInts(baseBytes, mb)},
		{figure: "diff: registry blob bytes, regfs (max) / crane (median)", measured: mb(maxAll) + " / " + mb(medianInt(craneBytes)),
			target: "regfs <= " + mb(d.distinct) + " (distinct blobs)", verdict: verdict(maxAll <= d.distinct), detail: "regfs per run: " + joinInts(regfsBytes, mb)},
	}, nil
}

// checkDiff normalises diff -r output (roots a and b shown as A and B, lines
// device pairs dropped) and checks that it holds every wanted line.
//
// diff -r takes two devices with the same numbers for the same file only if
// their mtime and ctime (in seconds) match too; otherwise it prints "File X
// is a character special file while file Y is a character special file".
// Trees extracted by tar at different seconds get different ctimes, regfs
// shows the tar's times: such lines say nothing about the contents.
func checkDiff(out []byte, a, b string, want []string) (string, error) {
	s := strings.ReplaceAll(string(out), a, "A")
	s = strings.ReplaceAll(s, b, "B")
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if !sameKindDevices.MatchString(l) {
			lines = append(lines, l)
		}
	}
	for _, w := range want {
		if !slices.Contains(lines, w) {
			return "", fmt.Errorf("diff -r output lacks %q:\n%s", w, s)
		}
	}
	return strings.Join(lines, "\n") + "\n", nil
}

// sameKindDevices matches diff's line for two devices of one kind.
var sameKindDevices = regexp.MustCompile(`^File \S+ is a (character|block) special file while file \S+ is a (character|block) special file$`)

// diffMethod explains how the diff figures were taken.
const diffMethod = `  diff: bench/debian:diff has linux/arm64 and linux/amd64, each the Debian rootfs layer (one
  blob, shared) under a small top layer of its own (changes etc/motd, adds two files). regfs:
  fresh mount and empty cache per run, time of 'diff -r --no-dereference' of the two rootfs
  directories (the mount already up). crane: 'crane export --platform P | tar -x' of each
  platform, then the same diff of the trees. --no-dereference on both sides: a dereferencing
  diff follows the rootfs's absolute symlinks to the host. Both diffs must print the same
  lines (roots renamed), including the changed and added files; lines about two devices of
  one kind are dropped (diff -r prints them when ctimes differ, as for trees extracted at
  different seconds).
`
