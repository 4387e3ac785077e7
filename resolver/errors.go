package resolver

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Error classes. Every error returned by a Client matches exactly one of them with errors.Is
// (or is a context error when the caller's context ended).
var (
	// ErrNotFound: the repository, tag, digest or name does not exist (ENOENT).
	ErrNotFound = errors.New("not found")
	// ErrDenied: the registry refused access (EACCES).
	ErrDenied = errors.New("access denied")
	// ErrUnavailable: the registry failed or could not be reached, after bounded retries (EIO).
	ErrUnavailable = errors.New("registry unavailable")
	// ErrInvalid: a malformed document, reference or answer (EIO).
	ErrInvalid = errors.New("invalid")
)

// statusError is an HTTP answer that was not a success. It unwraps to its class.
type statusError struct {
	class   error  // one of the Err* classes
	status  int    // HTTP status code
	code    string // first registry error code, if any
	message string // registry's message or a note, if any
}

func (e *statusError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v: HTTP %d", e.class, e.status)
	if e.code != "" {
		fmt.Fprintf(&b, " %s", e.code)
	}
	if e.message != "" {
		fmt.Fprintf(&b, ": %s", e.message)
	}
	return b.String()
}

func (e *statusError) Unwrap() error { return e.class }

// registryErrors is the error body of the distribution spec.
type registryErrors struct {
	Errors []struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"errors"`
}

// classify maps an HTTP error answer to an error class. hub selects Docker Hub's reading of
// 401 (not found or not allowed: reported as not found).
func classify(status int, body []byte, hub bool) *statusError {
	e := &statusError{status: status}
	var re registryErrors
	if json.Unmarshal(body, &re) == nil && len(re.Errors) > 0 {
		e.code = re.Errors[0].Code
		e.message = truncate(re.Errors[0].Message, 200)
	}
	switch {
	case status == http.StatusUnauthorized && hub:
		e.class = ErrNotFound
		e.message = "Docker Hub: repository does not exist or needs credentials"
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		e.class = ErrDenied
	case status == http.StatusNotFound:
		e.class = ErrNotFound
	case status == http.StatusBadRequest && isNameCode(e.code):
		e.class = ErrNotFound
	case status == http.StatusRequestedRangeNotSatisfiable:
		e.class = ErrInvalid
	default:
		e.class = ErrUnavailable
	}
	return e
}

// isNameCode reports distribution error codes that mean "no such name".
func isNameCode(code string) bool {
	switch code {
	case "NAME_UNKNOWN", "NAME_INVALID", "MANIFEST_UNKNOWN", "TAG_INVALID", "BLOB_UNKNOWN", "MANIFEST_INVALID":
		return true
	}
	return false
}

// retryableStatus reports statuses worth another try.
func retryableStatus(status int) bool {
	switch status {
	case http.StatusRequestTimeout, http.StatusTooManyRequests, http.StatusInternalServerError,
		http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// invalidf returns an ErrInvalid-class error.
func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// notFoundf returns an ErrNotFound-class error.
func notFoundf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrNotFound, fmt.Sprintf(format, args...))
}
