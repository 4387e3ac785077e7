# regfs: see README.md.
GO        ?= go
BIN       ?= bin/regfs
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo devel)
MNT       ?= /mnt/reg

.PHONY: build test vet bench demo fuzz deps clean

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/regfs

# The test command README.md and .ci/run use.
# The real-rootfs test (REGFS_ROOTFS_DIR, see .ci/run) is too slow under
# -race, so it runs once more without it.
test:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 15m ./...
	$(GO) test -count=1 -timeout 5m -run 'TestRealRootfs' ./integration/

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }

bench:
	scripts/bench.sh

# Mount the built-in sample registry at $(MNT) (Ctrl-C to unmount).
demo: build
	mkdir -p $(MNT)
	$(BIN) mount --demo $(MNT)

# Installs what the tests need on Debian (run as root).
deps:
	scripts/install-deps.sh

clean:
	rm -rf bin

# Every fuzz target, REGFS_FUZZTIME (default 50000x) each; CI runs it.
fuzz:
	scripts/fuzz.sh
