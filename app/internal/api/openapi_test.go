package api

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/goccy/go-yaml"
)

// The OpenAPI description in api/openapi.yaml lists exactly the routes the
// server registers, and its references resolve.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	data, err := os.ReadFile("../../api/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatalf("api/openapi.yaml: %v", err)
	}
	if v, _ := doc["openapi"].(string); !strings.HasPrefix(v, "3.1.") {
		t.Errorf("openapi version %q, want 3.1.x", v)
	}
	paths, ok := doc["paths"].(map[string]any)
	if !ok {
		t.Fatal("api/openapi.yaml has no paths mapping")
	}
	var documented []string
	for path, item := range paths {
		ops, ok := item.(map[string]any)
		if !ok {
			t.Fatalf("path %s is not a mapping", path)
		}
		for method, op := range ops {
			switch method {
			case "get", "put", "post", "delete", "options", "head", "patch", "trace":
			default:
				continue
			}
			documented = append(documented, strings.ToUpper(method)+" "+path)
			o, _ := op.(map[string]any)
			if _, ok := o["responses"]; !ok {
				t.Errorf("%s %s has no responses", method, path)
			}
		}
	}
	var served []string
	for _, r := range Routes() {
		served = append(served, r.Method+" "+r.Path)
	}
	slices.Sort(documented)
	slices.Sort(served)
	if !slices.Equal(documented, served) {
		t.Errorf("api/openapi.yaml documents\n  %s\nthe server registers\n  %s", strings.Join(documented, "\n  "), strings.Join(served, "\n  "))
	}

	// Authentication answers every route that needs a key with 401 (no,
	// a malformed or an unknown key) or 429 (the client's address failed
	// too often), whatever the rate-limit rules: each such operation
	// documents both, 429 as TooManyRequests.
	for _, r := range Routes() {
		if !r.Auth {
			continue
		}
		item, _ := paths[r.Path].(map[string]any)
		op, _ := item[strings.ToLower(r.Method)].(map[string]any)
		responses, _ := op["responses"].(map[string]any)
		for code, ref := range map[string]string{"401": "#/components/responses/Unauthorized", "429": "#/components/responses/TooManyRequests"} {
			resp, _ := responses[code].(map[string]any)
			if got, _ := resp["$ref"].(string); got != ref {
				t.Errorf("%s %s: response %s is %v, want $ref %s", r.Method, r.Path, code, responses[code], ref)
			}
		}
	}

	// Every path answers the methods it does not serve 405 with Allow
	// (the router's problem), so each operation lists that 405; and every
	// route that needs a key can fail on the server's side: 500 (a handler
	// panicked) and 503 (the task database, the key lookup or the limits
	// store failed).
	for _, r := range Routes() {
		item, _ := paths[r.Path].(map[string]any)
		op, _ := item[strings.ToLower(r.Method)].(map[string]any)
		responses, _ := op["responses"].(map[string]any)
		want := map[string]string{"405": "#/components/responses/MethodNotAllowed"}
		if r.Auth {
			want["500"] = "#/components/responses/ServerError"
			want["503"] = "#/components/responses/Unavailable"
		}
		for code, ref := range want {
			resp, _ := responses[code].(map[string]any)
			if got, _ := resp["$ref"].(string); got != ref {
				t.Errorf("%s %s: response %s is %v, want $ref %s", r.Method, r.Path, code, responses[code], ref)
			}
		}
	}

	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if k == "$ref" {
					ref, _ := x.(string)
					if !resolves(doc, ref) {
						t.Errorf("$ref %q does not resolve", ref)
					}
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(doc)
}

func resolves(doc map[string]any, ref string) bool {
	rest, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return false
	}
	var cur any = doc
	for _, part := range strings.Split(rest, "/") {
		m, ok := cur.(map[string]any)
		if !ok {
			return false
		}
		if cur, ok = m[part]; !ok {
			return false
		}
	}
	return true
}
