package main

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/regfs/regfs/internal/fixture"
)

func TestMedian(t *testing.T) {
	ms := func(xs ...int) []time.Duration {
		ds := make([]time.Duration, len(xs))
		for i, x := range xs {
			ds[i] = time.Duration(x) * time.Millisecond
		}
		return ds
	}
	tests := []struct {
		name string
		in   []time.Duration
		want time.Duration
	}{
		{"none", nil, 0},
		{"one", ms(7), 7 * time.Millisecond},
		{"odd unsorted", ms(9, 1, 5), 5 * time.Millisecond},
		{"even: mean of the middle two", ms(4, 1, 10, 2), 3 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := median(tt.in); got != tt.want {
				t.Errorf("median(%v) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
	if got, want := medianInt([]int64{5, 1, 3, 100}), int64(4); got != want {
		t.Errorf("medianInt = %d, want %d", got, want)
	}
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 20; i++ {
		ds = append(ds, time.Duration(21-i)) // 20, 19, …, 1
	}
	tests := []struct {
		p    int
		want time.Duration
	}{{0, 1}, {10, 2}, {90, 18}, {100, 20}}
	for _, tt := range tests {
		if got := percentile(ds, tt.p); got != tt.want {
			t.Errorf("percentile(1..20, %d) = %v, want %v", tt.p, got, tt.want)
		}
	}
}

func TestParseTimeReport(t *testing.T) {
	report := `	Command being timed: "bin/regfs mount /mnt"
	User time (seconds): 0.78
	System time (seconds): 0.20
	Percent of CPU this job got: 84%
	Elapsed (wall clock) time (h:mm:ss or m:ss): 0:01.16
	Maximum resident set size (kbytes): 53560
	Average resident set size (kbytes): 0
`
	tests := []struct {
		name    string
		in      string
		want    procStats
		wantErr error
	}{
		{"GNU time -v", report, procStats{maxRSS: 53560, cpu: 980 * time.Millisecond}, nil},
		{"no RSS line", "\tUser time (seconds): 0.1\n", procStats{cpu: 100 * time.Millisecond}, errNoRSS},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseTimeReport(strings.NewReader(tt.in))
			if got != tt.want || !errors.Is(err, tt.wantErr) {
				t.Errorf("parseTimeReport = %+v, %v; want %+v, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
	if _, err := parseTimeReport(strings.NewReader("\tMaximum resident set size (kbytes): lots\n")); err == nil {
		t.Error("parseTimeReport accepted a non-number")
	}
}

func TestShellQuote(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/tmp/a b", `'/tmp/a b'`},
		{"it's", `'it'\''s'`},
		{"", "''"},
	}
	for _, tt := range tests {
		if got := shq(tt.in); got != tt.want {
			t.Errorf("shq(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestConcat(t *testing.T) {
	files := []fixture.Entry{
		{Name: "a", Open: func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader("abc")), nil }},
		{Name: "empty", Open: func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader("")), nil }},
		{Name: "b", Open: func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader("de")), nil }},
	}
	tests := []struct {
		n    int64
		want string
	}{{0, ""}, {4, "abcd"}, {5, "abcde"}, {12, "abcdeabcdeab"}}
	for _, tt := range tests {
		got, err := io.ReadAll(concat(files, tt.n))
		if err != nil || !bytes.Equal(got, []byte(tt.want)) {
			t.Errorf("concat(%d) = %q, %v; want %q", tt.n, got, err, tt.want)
		}
	}
}

func TestPrintTable(t *testing.T) {
	img := &image{repo: "bench/debian", tag: "bookworm", platform: benchPlatform, layerSize: 100e6, tarSize: 270e6, entries: 3}
	var out bytes.Buffer
	printTable(&out, img, []row{
		{figure: "a", measured: "1", target: "<= 2", verdict: "pass"},
		{figure: "b", measured: "3", target: "<= 2", verdict: "FAIL", detail: "runs: 3 3 3"},
		{figure: "c", measured: "info only"},
	}, time.Minute, "  a: how\n")
	got := out.String()
	for _, want := range []string{"pass", "FAIL", "info", "b: runs: 3 3 3", "  a: how", "bench: 1 passed, 1 failed"} {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks %q:\n%s", want, got)
		}
	}
}
