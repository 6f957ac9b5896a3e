//go:build race

package main

// raceEnabled: the tests run with -race, so TestMain builds taskd with it
// too, and a data race in the server fails the test that started it.
const raceEnabled = true
