package redisstore

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/allowancehq/allowance/redisstore/internal/luagen"
)

// TestScriptsGenerated checks that the scripts the store embeds are those
// their sources (scripts/*.in.lua and scripts/alg_*.lua) make.
func TestScriptsGenerated(t *testing.T) {
	want, err := luagen.Generate(os.DirFS("scripts"))
	if err != nil {
		t.Fatal(err)
	}
	for name, text := range want {
		got, err := os.ReadFile(filepath.Join("scripts", name))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != text {
			t.Errorf("scripts/%s is not what its sources make: run go generate ./redisstore", name)
		}
	}
}
