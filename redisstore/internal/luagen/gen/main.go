// Command gen writes redisstore's Lua scripts from their sources (see
// package luagen): go generate in redisstore runs it on scripts/.
//
//	go run ./internal/luagen/gen scripts
package main

import (
	"log"
	"os"
	"path/filepath"

	"github.com/allowancehq/allowance/redisstore/internal/luagen"
)

func main() {
	if len(os.Args) != 2 {
		log.Fatal("usage: gen DIR")
	}
	dir := os.Args[1]
	scripts, err := luagen.Generate(os.DirFS(dir))
	if err != nil {
		log.Fatal(err)
	}
	for name, text := range scripts {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			log.Fatal(err)
		}
	}
}
