// Package redistest starts real redis-server processes for tests: a single
// node on a free loopback port, a three-master Redis Cluster, or a master
// with a replica watched by a Sentinel. Everything it starts is stopped by
// the test's Cleanup.
//
// When redis-server (or redis-cli, for a Cluster) is not on PATH the test is
// skipped with a message saying how to install it, except when the
// environment variable CI is "true": there a missing server fails the test.
package redistest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// startTimeout bounds how long a server may take to answer PING, and a
// Cluster to report cluster_state:ok.
const startTimeout = 30 * time.Second

// Server starts a redis-server on a free loopback port and returns its
// address, "127.0.0.1:port". The server keeps nothing on disk and is stopped
// by t.Cleanup.
func Server(t testing.TB) string {
	t.Helper()
	return Start(t).Addr()
}

// Instance is one redis-server process started by Start. Stop and Restart let
// a test take the server away and bring it back on the same port.
type Instance struct {
	t     testing.TB
	bin   string
	port  int
	dir   string
	conf  string // a config file to start with (a Sentinel's), or ""
	extra []string

	mu     sync.Mutex
	proc   *os.Process
	exited chan struct{}
	log    *lockedBuffer
}

// Start starts a redis-server on a free loopback port, waits until it answers
// PING, and stops it in t.Cleanup. extra arguments are passed to redis-server
// after the defaults (such as "--cluster-enabled", "yes").
func Start(t testing.TB, extra ...string) *Instance {
	t.Helper()
	return startWith(t, nil, extra)
}

// startWith is Start with a config file: conf, when not nil, returns the
// file's text for the port the server will listen on, written to its
// directory and passed first.
func startWith(t testing.TB, conf func(port int) string, extra []string) *Instance {
	t.Helper()
	bin := lookPath(t, "redis-server")
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		in := &Instance{t: t, bin: bin, port: freePort(t), dir: t.TempDir(), extra: extra}
		if conf != nil {
			in.conf = filepath.Join(in.dir, "redis.conf")
			if err := os.WriteFile(in.conf, []byte(conf(in.port)), 0o600); err != nil {
				t.Fatalf("redistest: write %s: %v", in.conf, err)
			}
		}
		if lastErr = in.start(); lastErr == nil {
			t.Cleanup(in.Stop)
			return in
		}
	}
	t.Fatalf("redistest: start redis-server: %v", lastErr)
	return nil
}

// Addr returns the server's address, "127.0.0.1:port".
func (in *Instance) Addr() string { return "127.0.0.1:" + strconv.Itoa(in.port) }

// Log returns what the server has written to its log so far.
func (in *Instance) Log() string {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.log == nil {
		return ""
	}
	return in.log.String()
}

// Stop kills the server and waits for it to exit. Stopping a stopped server
// does nothing.
func (in *Instance) Stop() {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.proc == nil {
		return
	}
	_ = in.proc.Kill()
	<-in.exited
	in.proc = nil
}

// Pause stops the server with SIGSTOP: it keeps its connections and data
// but answers nothing, as a server stalled by the kernel, a slow disk or a
// long command does. Commands sent meanwhile run when Resume lets it go on.
func (in *Instance) Pause() { in.signal(pauseSignal) }

// Resume lets a paused server go on (SIGCONT).
func (in *Instance) Resume() { in.signal(resumeSignal) }

func (in *Instance) signal(sig os.Signal) {
	in.t.Helper()
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.proc == nil {
		in.t.Fatalf("redistest: signal %v: the server on %s is not running", sig, in.Addr())
	}
	if err := in.proc.Signal(sig); err != nil {
		in.t.Fatalf("redistest: signal %v to the server on %s: %v", sig, in.Addr(), err)
	}
}

// Restart stops the server if it runs and starts it again on the same port,
// with an empty dataset, waiting until it answers PING. It fails the test
// when the server cannot start.
func (in *Instance) Restart() {
	in.t.Helper()
	in.Stop()
	var err error
	for attempt := 0; attempt < 50; attempt++ {
		if err = in.start(); err == nil {
			return
		}
		// The port of the old process may linger briefly.
		time.Sleep(100 * time.Millisecond)
	}
	in.t.Fatalf("redistest: restart redis-server on %s: %v", in.Addr(), err)
}

func (in *Instance) start() error {
	args := []string{
		"--port", strconv.Itoa(in.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", in.dir,
		"--daemonize", "no",
		"--logfile", "",
	}
	args = append(args, in.extra...)
	if in.conf != "" {
		args = append([]string{in.conf}, args...)
	}
	cmd := exec.Command(in.bin, args...)
	log := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	setParentDeath(cmd)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("exec %s: %w", in.bin, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-exited:
			return fmt.Errorf("redis-server on port %d exited: %s", in.port, log.String())
		default:
		}
		reply, err := Command(in.Addr(), "PING")
		if err == nil && reply == "PONG" {
			break
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("redis-server on port %d did not answer PING within %v: %v", in.port, startTimeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	in.mu.Lock()
	in.proc, in.exited, in.log = cmd.Process, exited, log
	in.mu.Unlock()
	return nil
}

// Cluster starts a Redis Cluster of three masters without replicas on free
// loopback ports, waits until every node reports cluster_state:ok, and
// returns the nodes' addresses (any of them is a seed). The nodes are stopped
// by t.Cleanup.
func Cluster(t testing.TB) []string {
	t.Helper()
	cli := lookPath(t, "redis-cli")
	var nodes []*Instance
	var addrs []string
	for i := 0; i < 3; i++ {
		in := Start(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000")
		nodes = append(nodes, in)
		addrs = append(addrs, in.Addr())
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	out, err := exec.Command(cli, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("redistest: redis-cli --cluster create %s: %v\n%s", strings.Join(addrs, " "), err, out)
	}
	deadline := time.Now().Add(startTimeout)
	for _, in := range nodes {
		for {
			info, err := Command(in.Addr(), "CLUSTER", "INFO")
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("redistest: cluster node %s not ok within %v: %v %q", in.Addr(), startTimeout, err, info)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// Every node must also know every slot's owner before clients connect.
	for _, in := range nodes {
		for {
			slots, err := Command(in.Addr(), "CLUSTER", "INFO")
			if err == nil && strings.Contains(slots, "cluster_slots_ok:16384") && strings.Contains(slots, "cluster_known_nodes:3") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("redistest: cluster node %s does not see all slots within %v: %v %q", in.Addr(), startTimeout, err, slots)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return addrs
}

// MasterSet is the name under which Sentinel's Sentinel monitors its master.
const MasterSet = "allowance"

// SentinelGroup is a master, one replica of it, and one Sentinel that
// monitors them, started by Sentinel.
type SentinelGroup struct {
	t                         testing.TB
	Master, Replica, Sentinel *Instance
}

// Sentinel starts a master and a replica of it on free loopback ports and a
// Sentinel that monitors the master as MasterSet with a quorum of one and
// timeouts of a few seconds, and waits until the replica has synced and the
// Sentinel sees both. Clients connect to the Sentinel's Addr and ask it for
// MasterSet. Everything is stopped by t.Cleanup.
func Sentinel(t testing.TB) *SentinelGroup {
	t.Helper()
	master := Start(t)
	replica := Start(t, "--replicaof", "127.0.0.1", strconv.Itoa(master.port))
	waitInfo(t, replica.Addr(), "replication", "master_link_status:up")
	sentinel := startWith(t, func(int) string {
		return fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d 1\n"+
			"sentinel down-after-milliseconds %[1]s 30000\n"+
			"sentinel failover-timeout %[1]s 10000\n", MasterSet, master.port)
	}, []string{"--sentinel"})
	g := &SentinelGroup{t: t, Master: master, Replica: replica, Sentinel: sentinel}
	waitInfo(t, sentinel.Addr(), "sentinel", fmt.Sprintf("name=%s,status=ok,address=%s,slaves=1,", MasterSet, master.Addr()))
	return g
}

// MasterAddr returns the address of the master the Sentinel reports.
func (g *SentinelGroup) MasterAddr() string {
	g.t.Helper()
	info, err := Command(g.Sentinel.Addr(), "INFO", "sentinel")
	if err != nil {
		g.t.Fatalf("redistest: INFO sentinel: %v", err)
	}
	_, rest, ok := strings.Cut(info, "name="+MasterSet+",")
	if !ok {
		g.t.Fatalf("redistest: the Sentinel does not monitor %s: %q", MasterSet, info)
	}
	_, rest, ok = strings.Cut(rest, "address=")
	addr, _, _ := strings.Cut(rest, ",")
	if !ok || addr == "" {
		g.t.Fatalf("redistest: no master address in %q", info)
	}
	return addr
}

// Failover makes the Sentinel promote the replica (SENTINEL FAILOVER) and
// waits until the Sentinel reports the replica as the master, the replica
// says it is one, and the old master has become its replica. Until then the
// old master still takes writes from clients that have not yet heard of the
// switch, and loses them when it becomes a replica: a test that waited less
// would race with that. Before it asks, it waits until the replica has
// acknowledged every write the master took (WAIT), so the failover loses
// nothing. Master and Replica change places.
//
// The Sentinel waits 30 s before it fails over a master on its own, so a
// machine too busy to answer its pings for a few seconds does not make
// the group fail over behind the test's back.
func (g *SentinelGroup) Failover() {
	g.t.Helper()
	if addr := g.MasterAddr(); addr != g.Master.Addr() {
		g.t.Fatalf("redistest: the Sentinel reports master %s before the failover; want %s", addr, g.Master.Addr())
	}
	waitDeadline := time.Now().Add(startTimeout)
	for {
		n, err := Command(g.Master.Addr(), "WAIT", "1", "1000")
		if err == nil && n == "1" {
			break
		}
		if time.Now().After(waitDeadline) {
			g.t.Fatalf("redistest: WAIT for the replica of %s: %q, %v", g.Master.Addr(), n, err)
		}
	}
	// A Sentinel that has not yet read the replica's own INFO (it does every
	// few seconds) answers NOGOODSLAVE: ask again until it accepts.
	deadline := time.Now().Add(startTimeout)
	for {
		_, err := Command(g.Sentinel.Addr(), "SENTINEL", "FAILOVER", MasterSet)
		if err == nil {
			break
		}
		if !strings.HasPrefix(err.Error(), "NOGOODSLAVE") || time.Now().After(deadline) {
			g.t.Fatalf("redistest: SENTINEL FAILOVER %s: %v", MasterSet, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	waitInfo(g.t, g.Sentinel.Addr(), "sentinel", fmt.Sprintf("name=%s,status=ok,address=%s,", MasterSet, g.Replica.Addr()))
	waitInfo(g.t, g.Replica.Addr(), "replication", "role:master")
	// The Sentinel turns the old master into a replica of the new one when
	// it next reads its INFO, about 10 s on; on a starved machine that can
	// take longer than a test waits. Past sentinelReconfig, send the old
	// master the command the Sentinel would (REPLICAOF the new master), which
	// ends in the same state.
	want := "master_port:" + strconv.Itoa(g.Replica.port) + "\r\n"
	if !pollInfo(g.Master.Addr(), "replication", want, sentinelReconfig) {
		host, port, _ := net.SplitHostPort(g.Replica.Addr())
		if _, err := Command(g.Master.Addr(), "REPLICAOF", host, port); err != nil {
			g.t.Fatalf("redistest: REPLICAOF %s on the old master %s: %v", g.Replica.Addr(), g.Master.Addr(), err)
		}
	}
	waitInfo(g.t, g.Master.Addr(), "replication", want)
	g.Master, g.Replica = g.Replica, g.Master
}

// sentinelReconfig is how long Failover waits for the Sentinel to turn the
// old master into a replica before doing it as the Sentinel would.
const sentinelReconfig = 15 * time.Second

// pollInfo reports whether INFO section on addr contains want within d.
func pollInfo(addr, section, want string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		info, err := Command(addr, "INFO", section)
		if err == nil && strings.Contains(info, want) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitInfo waits until INFO section on addr contains want.
func waitInfo(t testing.TB, addr, section, want string) {
	t.Helper()
	deadline := time.Now().Add(startTimeout)
	for {
		info, err := Command(addr, "INFO", section)
		if err == nil && strings.Contains(info, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("redistest: INFO %s on %s does not say %q within %v: %v %q", section, addr, want, startTimeout, err, info)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Command sends one command to the Redis server at addr over a fresh
// connection and returns its reply as text: the string of a simple or bulk
// string reply, the decimal form of an integer. An error reply is returned as
// an error. It is meant for test setup and inspection (CLIENT KILL, DEBUG,
// CONFIG SET), not for speed; array replies are not supported.
func Command(addr string, args ...string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(conn, b.String()); err != nil {
		return "", err
	}
	r := bufio.NewReader(conn)
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return "", errors.New("empty reply")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", errors.New(line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return "", fmt.Errorf("bad bulk length %q", line)
		}
		if n < 0 {
			return "", nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	return "", fmt.Errorf("unsupported reply %q", line)
}

func lookPath(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	msg := fmt.Sprintf("redistest: %s not found on PATH; install Redis (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis)", name)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

var portMu sync.Mutex

// freePort returns a loopback port that is free, and whose cluster bus port
// (port+10000) is free too, so that any server may join a Cluster.
func freePort(t testing.TB) int {
	t.Helper()
	portMu.Lock()
	defer portMu.Unlock()
	for attempt := 0; attempt < 1000; attempt++ {
		port := 20000 + rand.IntN(25000)
		if free(port) && free(port+10000) {
			return port
		}
	}
	t.Fatal("redistest: no free loopback port found")
	return 0
}

func free(port int) bool {
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// lockedBuffer collects a process's output while tests may read it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
