# connectd - developer entry points. `make run` and `make test` are all a
# fresh clone needs.

SHELL     := /bin/bash
GO        ?= go
BIN       ?= bin/connectd
PG_URL    ?= postgres://postgres@127.0.0.1:5432/test?sslmode=disable
FUZZTIME  ?= 10s
TEST_TIMEOUT ?= 20m
STATICCHECK_VERSION ?= v0.8.2
GOBIN_DIR := $(shell $(GO) env GOPATH)/bin
STATICCHECK := $(GOBIN_DIR)/staticcheck

# Use PostgreSQL in tests when one answers on 127.0.0.1:5432 and the
# caller did not choose a URL already (CI exports its own).
PG_UP := $(shell if command -v pg_isready >/dev/null 2>&1; then \
	pg_isready -q -h 127.0.0.1 -p 5432 && echo yes; \
	else (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null && echo yes; fi)
ifeq ($(origin CONNECTD_TEST_POSTGRES_URL),undefined)
ifeq ($(PG_UP),yes)
export CONNECTD_TEST_POSTGRES_URL := $(PG_URL)
endif
endif

.PHONY: run build test test-faults bench loadtest lint fuzz

run: ## serve on 127.0.0.1:8080 with an embedded SQLite database and generated keys in ./data
	CONNECTD_DEMO=true $(GO) run ./server/cmd/connectd serve

build: ## build bin/connectd
	$(GO) build -trimpath -o $(BIN) ./server/cmd/connectd

test: ## unit + integration tests with -race (PostgreSQL too when it answers)
	@if [ -n "$$CONNECTD_TEST_POSTGRES_URL" ]; then echo "PostgreSQL tests: on"; else echo "PostgreSQL tests: off (no server on 127.0.0.1:5432)"; fi
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...

# Fault runs (build tag `faults`) on a PRIVATE PostgreSQL cluster that
# .ci/private-pg creates (initdb on a free loopback port, as the postgres
# user) and deletes afterwards: the tests stop and restart it, so never the
# shared server. Serial (-p 1). FAULTS_RUN selects every TestFault* (e.g.
# kill -9 of a key rotation over 100,000 values, PostgreSQL stopped
# mid-request), the multi-process refresh-lease take-over and the provider
# fault cases of core/refresh.
FAULTS_RUN ?= ^(TestFault.*|TestReplicaProcesses|TestTemporaryFailuresKeepTokens|TestLostResponseThenInvalidGrant|TestLeaseHolderDies|TestConcurrentRefreshAcrossReplicas)$$
FAULTS_FLAGS ?= -race
test-faults: ## fault runs (-tags faults) on a private PostgreSQL cluster (SQLite too)
	.ci/private-pg run -- $(GO) test $(FAULTS_FLAGS) -tags faults -count=1 -p 1 -timeout $(TEST_TIMEOUT) -run '$(FAULTS_RUN)' ./...

BENCH     ?= .
BENCHTIME ?= 1s
bench: ## Go benchmarks of the hot paths with -benchmem (SQLite, and PostgreSQL when it answers)
	@if [ -n "$$CONNECTD_TEST_POSTGRES_URL" ]; then echo "PostgreSQL benchmarks: on"; else echo "PostgreSQL benchmarks: off (no server on 127.0.0.1:5432)"; fi
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchmem -benchtime $(BENCHTIME) ./...

LOADTEST_ARGS ?= -replicas 1 -c 64 -d 20s -bare
loadtest: ## load harness (server/cmd/connectd-loadtest): replica processes, fake CRM + provider, table + JSON
	$(GO) build -o bin/connectd-loadtest ./server/cmd/connectd-loadtest
	bin/connectd-loadtest $(LOADTEST_ARGS)

lint: ## gofmt, go vet, staticcheck
	@out=$$(gofmt -l $$(git ls-files -co --exclude-standard '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@test -x $(STATICCHECK) || $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	$(STATICCHECK) ./...

fuzz: ## run every fuzz target for FUZZTIME each (default 10s)
	@set -e; for pkg in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
			echo "== $$pkg $$f ($(FUZZTIME))"; \
			$(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
		done; \
	done
