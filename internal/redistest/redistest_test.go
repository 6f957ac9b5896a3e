package redistest

import (
	"strings"
	"testing"
)

func TestServerAnswersAndRestarts(t *testing.T) {
	in := Start(t)
	if _, err := Command(in.Addr(), "SET", "k", "v"); err != nil {
		t.Fatalf("SET: %v", err)
	}
	if v, err := Command(in.Addr(), "GET", "k"); err != nil || v != "v" {
		t.Fatalf("GET = %q, %v; want v", v, err)
	}
	in.Stop()
	if _, err := Command(in.Addr(), "PING"); err == nil {
		t.Fatal("PING succeeded after Stop")
	}
	in.Restart()
	if v, err := Command(in.Addr(), "GET", "k"); err != nil || v != "" {
		t.Fatalf("GET after restart = %q, %v; want an empty dataset", v, err)
	}
	if got, err := Command(in.Addr(), "CONFIG", "GET", "save"); err == nil {
		t.Fatalf("CONFIG GET returned %q; arrays are not supported and must be an error", got)
	}
}

func TestServerAddr(t *testing.T) {
	addr := Server(t)
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("Server = %q; want a loopback address", addr)
	}
	if v, err := Command(addr, "PING"); err != nil || v != "PONG" {
		t.Fatalf("PING = %q, %v", v, err)
	}
}

func TestCluster(t *testing.T) {
	addrs := Cluster(t)
	if len(addrs) != 3 {
		t.Fatalf("Cluster returned %d addresses; want 3", len(addrs))
	}
	for _, a := range addrs {
		info, err := Command(a, "CLUSTER", "INFO")
		if err != nil || !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_size:3") {
			t.Fatalf("CLUSTER INFO on %s = %q, %v", a, info, err)
		}
	}
}
