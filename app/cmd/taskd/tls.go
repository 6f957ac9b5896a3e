package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
)

// tlsFlags are serve's -tls-cert and -tls-key: HTTPS on -addr when both are
// given.
type tlsFlags struct {
	cert string
	key  string
}

func (t *tlsFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&t.cert, "tls-cert", "", "PEM certificate (chain) file: serve HTTPS on -addr; needs -tls-key. Empty: plain HTTP (fine behind a TLS-terminating proxy)")
	fs.StringVar(&t.key, "tls-key", "", "PEM private key file of -tls-cert")
}

// check reports -tls-cert without -tls-key or the other way round.
func (t *tlsFlags) check() error {
	switch {
	case t.cert != "" && t.key == "":
		return errors.New("-tls-cert is set but -tls-key is not; expected both (HTTPS) or neither (HTTP)")
	case t.cert == "" && t.key != "":
		return errors.New("-tls-key is set but -tls-cert is not; expected both (HTTPS) or neither (HTTP)")
	}
	return nil
}

// config loads the certificate and key, so that a missing or unreadable file
// stops taskd at start rather than at the first handshake. It returns nil
// when TLS is off.
func (t *tlsFlags) config() (*tls.Config, error) {
	if t.cert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(t.cert, t.key)
	if err != nil {
		return nil, fmt.Errorf("-tls-cert %q, -tls-key %q: %w", t.cert, t.key, err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// serveOn serves hs on ln: HTTPS when hs.TLSConfig is set (HTTP/2 and
// HTTP/1.1 negotiated by ALPN), else HTTP.
func serveOn(hs *http.Server, ln net.Listener) error {
	if hs.TLSConfig != nil {
		return hs.ServeTLS(ln, "", "")
	}
	return hs.Serve(ln)
}
