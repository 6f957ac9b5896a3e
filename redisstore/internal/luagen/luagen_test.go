package luagen

import (
	"strings"
	"testing"
	"testing/fstest"
)

func TestGenerate(t *testing.T) {
	fsys := fstest.MapFS{
		"common.in.lua": {Data: []byte("--@define ms(us) (us + 1) / 2\nlocal x = 1\n")},
		"charge.in.lua": {Data: []byte("if a then\n  --@include one.charge\nend\nlocal y = @ms(x)\n")},
		"refund.in.lua": {Data: []byte("--@include one.refund\n")},
		"peek.in.lua":   {Data: []byte("return 0\n")},
		"alg_one.lua":   {Data: []byte("-- doc\n--@section charge\nlocal c = @ms(f(x))\n\nc = c\n--@section refund\nr()\n")},
	}
	out, err := Generate(fsys)
	if err != nil {
		t.Fatal(err)
	}
	want := "if a then\n  local c = (f(x) + 1) / 2\n\n  c = c\nend\nlocal y = (x + 1) / 2\n"
	if got := out["charge.lua"]; !strings.HasSuffix(got, "DO NOT EDIT.\n"+want) {
		t.Errorf("charge.lua:\n%s\nwant it to end with\n%s", got, want)
	}
	if got := out["common.lua"]; !strings.HasSuffix(got, "DO NOT EDIT.\nlocal x = 1\n") {
		t.Errorf("common.lua:\n%s", got)
	}

	fsys["peek.in.lua"] = &fstest.MapFile{Data: []byte("--@include one.peek\n")}
	if _, err := Generate(fsys); err == nil || !strings.Contains(err.Error(), "no section one.peek") {
		t.Errorf("unknown section: %v", err)
	}
	fsys["peek.in.lua"] = &fstest.MapFile{Data: []byte("return @nope(1)\n")}
	if _, err := Generate(fsys); err == nil || !strings.Contains(err.Error(), "unknown macro") {
		t.Errorf("unknown macro: %v", err)
	}
	fsys["peek.in.lua"] = &fstest.MapFile{Data: []byte("return 0\n")}
	fsys["alg_one.lua"] = &fstest.MapFile{Data: []byte("--@section charge\nx()\n--@section refund\ny()\n--@section unused\nz()\n")}
	if _, err := Generate(fsys); err == nil || !strings.Contains(err.Error(), "included nowhere") {
		t.Errorf("unused section: %v", err)
	}
}
