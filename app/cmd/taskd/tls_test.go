package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key
// into dir as PEM files, and returns their paths and the certificate.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, cert *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "taskd test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if cert, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, cert
}

// taskd serve with -tls-cert and -tls-key serves HTTPS on -addr: a client
// that trusts the certificate gets its answers over TLS (HTTP/2 when it
// asks for it), and a plain HTTP request to that port is refused.
func TestServeTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, cert := selfSigned(t, dir)
	db := "sqlite:" + filepath.Join(dir, "t.db")
	code, key, stderr := runCLI(t, nil, "keys", "create", "-user", "alice", "-db", db)
	if code != 0 {
		t.Fatalf("keys create: exit %d: %s", code, stderr)
	}
	key = strings.TrimSpace(key)

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	w := &listenWatcher{metrics: make(chan string, 1), api: make(chan string, 1)}
	exited := make(chan int, 1)
	go func() {
		exited <- run(ctx, []string{"serve", "-addr", "127.0.0.1:0", "-db", db, "-workers", "0", "-log-format", "json",
			"-tls-cert", certFile, "-tls-key", keyFile}, io.Discard, w)
	}()
	var addr string
	select {
	case addr = <-w.api:
	case c := <-exited:
		t.Fatalf("taskd exited with %d before listening:\n%s", c, w)
	}
	if !strings.Contains(w.String(), `"tls":true`) {
		t.Errorf("taskd listening does not say tls=true:\n%s", w)
	}

	roots := x509.NewCertPool()
	roots.AddCert(cert)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	req, err := http.NewRequest("GET", "https://"+addr+"/v1/tasks", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	res, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET over HTTPS: %v", err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || res.TLS == nil || !strings.Contains(string(body), `"tasks":[]`) {
		t.Fatalf("GET /v1/tasks over HTTPS: %d, TLS %v, %s", res.StatusCode, res.TLS != nil, body)
	}
	if res.ProtoMajor != 2 {
		t.Errorf("protocol %s, want HTTP/2 (negotiated by ALPN)", res.Proto)
	}

	// A client that does not trust the certificate is refused by the
	// handshake, and plain HTTP gets no answer of the API.
	if _, err := http.Get("https://" + addr + "/healthz"); err == nil {
		t.Error("a client without the certificate got through")
	}
	if res, err := http.Get("http://" + addr + "/healthz"); err == nil {
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "HTTPS") {
			t.Errorf("plain HTTP to the TLS port: %d %s; want 400 from net/http", res.StatusCode, b)
		}
	}

	stop()
	if c := <-exited; c != 0 {
		t.Fatalf("taskd exited with %d after a graceful stop:\n%s", c, w)
	}
}
