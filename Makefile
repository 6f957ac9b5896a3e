# The one test command: `make test`. .ci/run calls it too.
GO ?= go
STATICCHECK_VERSION ?= v0.8.2

.PHONY: test lint run bench

# Two passes: -race finds data races, and the plain pass catches a test
# that only passes under the race detector's slower timing.
# The repository holds three modules (see go.work): the library (.), the
# taskd application (app) and the comparison benchmarks (bench). `./...`
# stops at a module's boundary, so each is named.
test:
	$(GO) vet ./... ./app/...
	$(GO) test -race -count=1 ./... ./app/...
	$(GO) test -count=1 ./... ./app/...
	cd bench && $(GO) vet ./... && $(GO) test -count=1 -run '^$$' ./...

lint:
	@test -z "$$(gofmt -l .)" || (echo "gofmt wants to change:"; gofmt -l .; exit 1)
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...
	cd app && $(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...
	cd bench && $(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

run:
	$(GO) run ./app/cmd/taskd

bench:
	cd bench && $(GO) test -run '^$$' -bench . -benchmem -cpu 2 ./...
