package resolver

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
)

// newTransport returns the transport under everything: base, or a clone of
// http.DefaultTransport, which takes proxies from HTTPS_PROXY, HTTP_PROXY and NO_PROXY
// (http.ProxyFromEnvironment) and trusts the system's CA certificates (which Go reads from
// SSL_CERT_FILE and SSL_CERT_DIR when they are set). With caFile, the certificates of that
// PEM file are trusted too; base must then be an *http.Transport (it is cloned).
func newTransport(base http.RoundTripper, caFile string) (http.RoundTripper, error) {
	if base == nil {
		base = http.DefaultTransport.(*http.Transport).Clone()
	}
	if caFile == "" {
		return base, nil
	}
	ht, ok := base.(*http.Transport)
	if !ok {
		return nil, fmt.Errorf("resolver: a CA file needs an *http.Transport, not %T", base)
	}
	pool, err := caPool(caFile)
	if err != nil {
		return nil, err
	}
	ht = ht.Clone()
	if ht.TLSClientConfig == nil {
		ht.TLSClientConfig = newTLSConfig()
	}
	ht.TLSClientConfig.RootCAs = pool
	return ht, nil
}

// caPool returns the system's CA pool (empty if it cannot be read) plus the certificates of
// the PEM file name.
func caPool(name string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("resolver: CA file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("resolver: CA file %s holds no PEM certificate", name)
	}
	return pool, nil
}

// newTLSConfig returns the TLS configuration of a transport that had none.
func newTLSConfig() *tls.Config { return &tls.Config{MinVersion: tls.VersionTLS12} }
