package faultproxy

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/regfs/regfs/internal/testenv"
)

// Servers of an [Event].
const (
	ServerRegistry = "registry" // the registry API (faults apply here)
	ServerToken    = "token"    // the token endpoint
	ServerCDN      = "cdn"      // the CDN that redirects lead to
)

// Event is one request the proxy or its CDN received, with what was done
// with it and when: the proxy's side of a client's failure.
type Event struct {
	ID     int64  // 1-based, in order of arrival
	Server string // ServerRegistry, ServerToken or ServerCDN
	Start  time.Time
	// Header is when the status line was written; zero if it never was.
	Header time.Time
	// End is when the proxy was done with the request; zero while it is in flight.
	End    time.Time
	Method string
	Path   string // path and query
	Range  string // the request's Range header
	Kind   testenv.Kind
	Rule   int    // index of the rule that acted (in SetRules order); -1 if none
	Fault  string // Fault.String of the fault applied; "" if none
	Status int    // status written; 0 if none
	Bytes  int64  // body bytes written
	// Outcome says how it ended: "ok", "client left", "reset", "held until
	// the client left", "held until close", "upstream: …", "copy: …"; "" in flight.
	Outcome string
}

// String formats the event on one line with absolute times (see Format).
func (e Event) String() string { return e.Format(time.Time{}) }

// Format formats the event on one line, times relative to base (absolute
// when base is zero), e.g. "#12 +1.234s..+3.240s (2.006s) registry GET blob
// /v2/… range=bytes=0-9 rule 11 stall-after(4096): 206 at +1.236s, 4096 B,
// held until the client left".
func (e Event) Format(base time.Time) string {
	at := func(t time.Time) string {
		switch {
		case t.IsZero():
			return "…"
		case base.IsZero():
			return t.Format("15:04:05.000")
		}
		return fmt.Sprintf("%+.3fs", t.Sub(base).Seconds())
	}
	var b strings.Builder
	fmt.Fprintf(&b, "#%d %s..%s", e.ID, at(e.Start), at(e.End))
	if !e.End.IsZero() {
		fmt.Fprintf(&b, " (%s)", e.End.Sub(e.Start).Round(time.Millisecond))
	}
	fmt.Fprintf(&b, " %s %s", e.Server, e.Method)
	if e.Kind != "" {
		fmt.Fprintf(&b, " %s", e.Kind)
	}
	fmt.Fprintf(&b, " %s", ShortDigests(e.Path))
	if e.Range != "" {
		fmt.Fprintf(&b, " range=%s", e.Range)
	}
	if e.Fault != "" {
		fmt.Fprintf(&b, " rule %d %s", e.Rule, e.Fault)
	}
	fmt.Fprintf(&b, ": %d", e.Status)
	if !e.Header.IsZero() {
		fmt.Fprintf(&b, " at %s", at(e.Header))
	}
	fmt.Fprintf(&b, ", %d B", e.Bytes)
	if e.Outcome != "" {
		fmt.Fprintf(&b, ", %s", e.Outcome)
	} else {
		b.WriteString(", in flight")
	}
	return b.String()
}

// sha256Re matches a sha256 digest.
var sha256Re = regexp.MustCompile(`sha256:[0-9a-f]{64}`)

// ShortDigests shortens every sha256 digest of s to its first 12 hex digits.
func ShortDigests(s string) string {
	return sha256Re.ReplaceAllStringFunc(s, func(d string) string { return d[:len("sha256:")+12] })
}

// Overlaps reports whether the event was in flight at some time in [from, to]
// (an event still in flight overlaps everything after its start).
func (e Event) Overlaps(from, to time.Time) bool {
	return !e.Start.After(to) && (e.End.IsZero() || !e.End.Before(from))
}

// RecordEvents makes the proxy keep the last n events (requests to the
// registry API, the token endpoint and the CDN); 0 stops recording and drops
// them. Recording costs a lock per body write.
func (p *Proxy) RecordEvents(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.evCap = max(n, 0)
	p.evs = nil
	p.evHead = 0
}

// Events returns a copy of the recorded events in order of arrival, the
// oldest first (at most the n of RecordEvents).
func (p *Proxy) Events() []Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Event, 0, len(p.evs))
	for i := range p.evs {
		out = append(out, *p.evs[(p.evHead+i)%len(p.evs)])
	}
	return out
}

// EventsBetween returns the recorded events in flight at some time in
// [from, to], in order of arrival.
func (p *Proxy) EventsBetween(from, to time.Time) []Event {
	var out []Event
	for _, e := range p.Events() {
		if e.Overlaps(from, to) {
			out = append(out, e)
		}
	}
	return out
}

// recWriter is the ResponseWriter of a recorded request: it records the
// status, when it was written and the body bytes in its event.
type recWriter struct {
	http.ResponseWriter
	p  *Proxy
	ev *Event // guarded by p.mu
}

// Unwrap lets http.ResponseController reach Flush and Hijack.
func (w *recWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *recWriter) WriteHeader(status int) {
	w.p.mu.Lock()
	if w.ev.Status == 0 {
		w.ev.Status, w.ev.Header = status, time.Now()
	}
	w.p.mu.Unlock()
	w.ResponseWriter.WriteHeader(status)
}

func (w *recWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	if w.ev.Status == 0 {
		w.ev.Status, w.ev.Header = http.StatusOK, time.Now()
	}
	w.p.mu.Unlock()
	n, err := w.ResponseWriter.Write(b)
	w.p.mu.Lock()
	w.ev.Bytes += int64(n)
	w.p.mu.Unlock()
	return n, err
}

// begin records a new event for r if recording is on, and returns the writer
// to answer through (w itself when recording is off).
func (p *Proxy) begin(w http.ResponseWriter, r *http.Request, server string, kind testenv.Kind) http.ResponseWriter {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.evCap == 0 {
		return w
	}
	p.evID++
	ev := &Event{ID: p.evID, Server: server, Start: time.Now(), Method: r.Method, Path: r.URL.RequestURI(),
		Range: r.Header.Get("Range"), Kind: kind, Rule: -1}
	if len(p.evs) < p.evCap {
		p.evs = append(p.evs, ev)
	} else {
		p.evs[p.evHead] = ev
		p.evHead = (p.evHead + 1) % len(p.evs)
	}
	return &recWriter{ResponseWriter: w, p: p, ev: ev}
}

// noteFault records the rule and fault that act on the request answered through w.
func (p *Proxy) noteFault(w http.ResponseWriter, rule int, f Fault) {
	if rw, ok := w.(*recWriter); ok && f.kind != kindNone {
		p.mu.Lock()
		rw.ev.Rule, rw.ev.Fault = rule, f.String()
		p.mu.Unlock()
	}
}

// outcome records how the request answered through w ended; the first
// outcome recorded stands.
func (p *Proxy) outcome(w http.ResponseWriter, format string, args ...any) {
	if rw, ok := w.(*recWriter); ok {
		p.mu.Lock()
		if rw.ev.Outcome == "" {
			rw.ev.Outcome = fmt.Sprintf(format, args...)
		}
		p.mu.Unlock()
	}
}

// finish ends the event of the request answered through w: its end time, and
// its outcome if none was recorded ("client left" if the client went away).
func (p *Proxy) finish(w http.ResponseWriter, r *http.Request) {
	rw, ok := w.(*recWriter)
	if !ok {
		return
	}
	gone := r.Context().Err() != nil
	p.mu.Lock()
	defer p.mu.Unlock()
	rw.ev.End = time.Now()
	if rw.ev.Outcome == "" {
		rw.ev.Outcome = "ok"
		if gone {
			rw.ev.Outcome = "client left"
		}
	}
}
