package main

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"strings"

	"github.com/allowancehq/allowance"
)

// loadReceiptKeys reads the receipt keys file of -receipt-keys-file: one key
// a line, in hex, at least allowance.MinReceiptKeyLen bytes; the first signs
// new receipts and every one verifies (rotation: put the new key first, keep
// the old one after it while receipts signed with it may still be
// refunded). Blank lines and lines starting with # are skipped. The error
// names the file and line, never a key.
func loadReceiptKeys(path string) (*allowance.ReceiptKeys, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("-receipt-keys-file: %w", err)
	}
	var keys [][]byte
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, err := hex.DecodeString(line)
		if err != nil || len(k) < allowance.MinReceiptKeyLen {
			return nil, fmt.Errorf("-receipt-keys-file %s:%d: expected a key of at least %d bytes in hex (%d hex digits; make one with: openssl rand -hex 32)",
				path, n, allowance.MinReceiptKeyLen, 2*allowance.MinReceiptKeyLen)
		}
		keys = append(keys, k)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("-receipt-keys-file %s: %w", path, err)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("-receipt-keys-file %s: no key; expected one key a line, in hex, the signing key first", path)
	}
	rk, err := allowance.NewReceiptKeys(keys...)
	if err != nil {
		return nil, fmt.Errorf("-receipt-keys-file %s: %w", path, err)
	}
	return rk, nil
}
