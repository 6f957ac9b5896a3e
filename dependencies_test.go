package allowance_test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestDependencies holds the library to docs/dependencies.md: a program
// builds only the third-party modules of the packages it imports. The root
// package, memstore, httplimit and redisstore pull in none; each Redis
// adapter pulls in its own client and not the other's.
func TestDependencies(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command on PATH")
	}
	for _, c := range []struct {
		pkg        string
		allow, ban []string
	}{
		{pkg: ".", allow: nil},
		{pkg: "./memstore", allow: nil},
		{pkg: "./httplimit", allow: nil},
		{pkg: "./redisstore", allow: nil},
		{pkg: "./redisstore/rueidisstore", allow: []string{"github.com/redis/rueidis", "golang.org/x/sys"}},
		{pkg: "./redisstore/goredisstore", allow: []string{"github.com/redis/go-redis/v9", "github.com/cespare/xxhash/v2", "go.uber.org/atomic", "golang.org/x/sys"}},
		{pkg: "./httplimit/promlimit", ban: []string{"github.com/redis/rueidis", "github.com/redis/go-redis/v9"}},
	} {
		out, err := exec.Command(gobin, "list", "-deps", "-f", "{{with .Module}}{{if not .Main}}{{.Path}}{{end}}{{end}}", c.pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", c.pkg, err)
		}
		for mod := range strings.FieldsSeq(string(out)) {
			if c.ban != nil {
				if slices.Contains(c.ban, mod) {
					t.Errorf("%s builds %s", c.pkg, mod)
				}
				continue
			}
			if !slices.Contains(c.allow, mod) {
				t.Errorf("%s builds %s; expected only %v (see docs/dependencies.md)", c.pkg, mod, c.allow)
			}
		}
	}
}
