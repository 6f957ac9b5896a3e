package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/allowancehq/allowance"
)

// -receipt-keys-file: the first key signs, every key verifies; a bad file
// fails at start with exit 2, naming the file and line but never a key.
func TestReceiptKeysFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const k1, k2 = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff", "ffeeddccbbaa99887766554433221100"
	both := write("both", "# signing key first\n"+k1+"\n\n"+k2+"\n")
	keys, err := loadReceiptKeys(both)
	if err != nil {
		t.Fatal(err)
	}
	old, err := loadReceiptKeys(write("old", k2+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	r := signedReceipt(t, old)
	if !keys.Verify(&r) {
		t.Error("a receipt signed with the second key of the file does not verify")
	}

	for _, tc := range []struct{ name, text, want string }{
		{"empty", "# nothing\n", "no key"},
		{"short", "0011\n", ":1: expected a key of at least 16 bytes in hex"},
		{"not hex", k1 + "\nzz" + k1[2:] + "\n", ":2: expected a key"},
	} {
		p := write(tc.name, tc.text)
		var stderr bytes.Buffer
		if code := run(t.Context(), []string{"serve", "-receipt-keys-file", p}, &stderr, &stderr); code != 2 {
			t.Errorf("%s: exit %d, want 2: %s", tc.name, code, stderr.String())
		}
		if !strings.Contains(stderr.String(), tc.want) || strings.Contains(stderr.String(), k1[4:]) {
			t.Errorf("%s: %q, want it to say %q and show no key", tc.name, stderr.String(), tc.want)
		}
	}
	var stderr bytes.Buffer
	if code := run(t.Context(), []string{"serve", "-receipt-keys-file", filepath.Join(dir, "missing")}, &stderr, &stderr); code != 2 {
		t.Errorf("missing file: exit %d, want 2: %s", code, stderr.String())
	}
}

// signedReceipt returns a receipt of one charge signed with keys.
func signedReceipt(t *testing.T, keys *allowance.ReceiptKeys) allowance.Receipt {
	t.Helper()
	l := allowance.Limit{Count: 5, Period: 60e9}
	r, err := allowance.NewReceipt(allowance.NewReceiptID(), "alice", []allowance.Charge{{Rule: "r", Limit: l, Algorithm: allowance.FixedWindow, Amount: 1, Window: 0}})
	if err != nil {
		t.Fatal(err)
	}
	keys.Sign(&r)
	return r
}
