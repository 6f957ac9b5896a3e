# The one test command: `make test`. .ci/run calls it too.
GO ?= go
STATICCHECK_VERSION ?= v0.8.2

.PHONY: test lint run bench

# Two passes: -race finds data races, and the plain pass catches a test
# that only passes under the race detector's slower timing.
test:
	$(GO) vet ./...
	$(GO) test -race -count=1 ./...
	$(GO) test -count=1 ./...
	cd bench && $(GO) vet ./... && $(GO) test -count=1 -run '^$$' ./...

lint:
	@test -z "$$(gofmt -l .)" || (echo "gofmt wants to change:"; gofmt -l .; exit 1)
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...
	cd bench && $(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

run:
	$(GO) run ./cmd/taskd

bench:
	cd bench && $(GO) test -run '^$$' -bench . -benchmem -cpu 2 ./...
