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

func TestSentinel(t *testing.T) {
	g := Sentinel(t)
	if got := g.MasterAddr(); got != g.Master.Addr() {
		t.Fatalf("MasterAddr = %s; want the master %s", got, g.Master.Addr())
	}
	if _, err := Command(g.Master.Addr(), "SET", "k", "v"); err != nil {
		t.Fatalf("SET on the master: %v", err)
	}
	if _, err := Command(g.Master.Addr(), "WAIT", "1", "5000"); err != nil {
		t.Fatalf("WAIT: %v", err)
	}
	old := g.Master.Addr()
	g.Failover()
	if g.Replica.Addr() != old || g.MasterAddr() != g.Master.Addr() {
		t.Fatalf("after Failover: master %s, replica %s, Sentinel says %s; want the old master %s as the replica", g.Master.Addr(), g.Replica.Addr(), g.MasterAddr(), old)
	}
	if v, err := Command(g.Master.Addr(), "GET", "k"); err != nil || v != "v" {
		t.Fatalf("GET on the new master = %q, %v; want the replicated v", v, err)
	}
	if _, err := Command(g.Master.Addr(), "SET", "k", "w"); err != nil {
		t.Fatalf("SET on the new master: %v", err)
	}
}
