package redisstore

// The scripts (scripts/charge.lua, refund.lua, peek.lua and common.lua,
// which each starts with) are assembled from their templates
// (scripts/*.in.lua) and one fragment per algorithm (scripts/alg_*.lua) by
// package internal/luagen. After editing a source, run go generate;
// TestScriptsGenerated fails while the scripts are not current.
//go:generate go run ./internal/luagen/gen scripts
