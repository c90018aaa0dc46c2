# Baton: `make help` lists the targets.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# Every module of the workspace; `go test ./...` at the root does not reach them.
MODULES := $(shell go list -m -f '{{.Dir}}' 2>/dev/null)
BIN := $(CURDIR)/bin
SERVICES := ingress router transfer analytics
APT_PACKAGES := clickhouse-server clickhouse-client sip-tester kcat kamailio chromium zookeeper \
	sipvicious nftables iproute2 baresip linphone-cli kamailio-tls-modules
GO_TEST_FLAGS ?= -race -count=1
# A current ClickHouse engine (26.x) for the tests, in process through chDB:
# npm's @chdb/lib-linux-x64-gnu ships libchdb.so, which chdb-go loads.
# Decision 0011 says why; the tests behind the `chdb` tag need it.
CHDB_VERSION := 26.7.3-stable.1
CHDB_DIR := $(CURDIR)/.cache/chdb-$(CHDB_VERSION)
CHDB_LIB := $(CHDB_DIR)/node_modules/@chdb/lib-linux-x64-gnu/libchdb.so

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

.PHONY: deps
deps: ## install the Debian packages the stack and tests need (ClickHouse, SIPp, kcat, Kamailio, Chromium)
	@missing=""; \
	for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	command -v npm >/dev/null 2>&1 || missing="$$missing nodejs npm"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
		$$sudo apt-get update -qq; \
		DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing; \
		case "$$missing" in *kamailio*) \
			echo "stopping the kamailio system service the package may have started (it would hold udp/5060)"; \
			$$sudo systemctl disable --now kamailio >/dev/null 2>&1 || true;; \
		esac; \
	fi

.PHONY: chdb
chdb: $(CHDB_LIB) ## fetch libchdb.so (ClickHouse 26.x as a library, from npm) for the current-engine tests

$(CHDB_LIB):
	@echo "fetching chDB $(CHDB_VERSION) (libchdb.so, about 540 MB) into $(CHDB_DIR)"
	@mkdir -p $(CHDB_DIR)
	@npm install --prefix $(CHDB_DIR) --no-save --no-audit --no-fund --loglevel=error \
		@chdb/lib-linux-x64-gnu@$(CHDB_VERSION)
	@test -f $@ || { echo "npm did not install $@"; exit 1; }

.PHONY: build
build: ## build the four services and the baton CLI into bin/
	@mkdir -p $(BIN)
	@for s in $(SERVICES); do (cd services/$$s && go build -o $(BIN)/$$s ./cmd/$$s); done
	@cd cmd/baton && go build -o $(BIN)/baton .

.PHONY: run
run: deps build ## run the whole pipeline locally with demo calls (Ctrl-C stops it)
	@$(BIN)/baton dev --bin-dir $(BIN) --run-dir $(CURDIR)/.run

.PHONY: test
test: deps chdb check build ## unit, integration and end-to-end tests (real SIPp, kfake, ClickHouse 18.16 and 26.x)
	@for m in $(MODULES); do \
		echo "== go test $$m"; \
		(cd $$m && BATON_BIN_DIR=$(BIN) CHDB_LIB_PATH=$(CHDB_LIB) go test $(GO_TEST_FLAGS) -tags chdb ./...); \
	done

.PHONY: test-reliability
test-reliability: deps build ## the reliability and security suite: faults, floods, scanners, hostile input (minutes; root for network namespaces)
	@mkdir -p .run
	@: > .run/reliability.log
	@for m in $(MODULES); do \
		echo "== reliability $$m"; \
		(cd $$m && BATON_BIN_DIR=$(BIN) go test -tags reliability -count=1 -timeout 60m -v -run 'Reliability' ./...) 2>&1 \
			| tee -a .run/reliability.log | scripts/reliability-summary; \
	done
	@scripts/reliability-table .run/reliability.log > .run/reliability.md
	@echo "== reliability table (.run/reliability.md; docs/reliability.md shows a run of it)"
	@cat .run/reliability.md

.PHONY: test-interop
test-interop: deps build ## the interop suite: Kamailio, baresip and linphonec (Debian) as SBC, caller and human agents (docs/interop.md)
	@cd cmd/baton && BATON_BIN_DIR=$(BIN) go test -tags interop -count=1 -timeout 10m -v -run 'TestInterop|TestGoertzel' ./internal/stack/

.PHONY: test-unit
test-unit: ## unit tests only (no SIPp or ClickHouse needed)
	@for m in $(MODULES); do (cd $$m && go test $(GO_TEST_FLAGS) -short ./...); done

.PHONY: check
check: ## gofmt, go vet, golangci-lint, and that generated code and go.mod files are current
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "not gofmt-clean:"; echo "$$out"; exit 1; fi
	@for m in $(MODULES); do (cd $$m && go vet ./... && go vet -tags reliability ./... && go vet -tags chdb ./... && go vet -tags interop ./...); done
	@$(MAKE) --no-print-directory generate-check tidy-check mod-drift lint

.PHONY: mod-drift
mod-drift: ## fail when two go.mod files require one dependency at two versions (decision 0012)
	@scripts/mod-drift

.PHONY: lint
lint: $(BIN)/golangci-lint ## golangci-lint over every module
	@for m in $(MODULES); do (cd $$m && $(BIN)/golangci-lint run --config $(CURDIR)/.golangci.yml ./...); done

$(BIN)/golangci-lint $(BIN)/buf $(BIN)/protoc-gen-go: tools/go.mod
	@mkdir -p $(BIN)
	@cd tools && GOWORK=off go build -o $(BIN)/ \
		github.com/golangci/golangci-lint/v2/cmd/golangci-lint \
		github.com/bufbuild/buf/cmd/buf \
		google.golang.org/protobuf/cmd/protoc-gen-go

.PHONY: generate
generate: $(BIN)/buf $(BIN)/protoc-gen-go ## lint the Protobuf contract and regenerate Go code
	@$(BIN)/buf lint
	@$(BIN)/buf generate

.PHONY: generate-check
generate-check: generate ## fail when generated code differs from the committed code
	@if [ -n "$$(git status --porcelain -- pkg/events/batonv1)" ]; then \
		echo "generated code drifted from schemas/: run 'make generate' and commit"; \
		git --no-pager diff --stat -- pkg/events/batonv1; exit 1; fi

.PHONY: tidy-check
tidy-check: ## fail when a go.mod or go.sum is not tidy
	@for m in $(MODULES) $(CURDIR)/tools; do \
		(cd $$m && GOWORK=off go mod tidy -diff >/dev/null) || { echo "go.mod not tidy in $$m: run go mod tidy"; exit 1; }; \
	done

.PHONY: bench
bench: ## run the Go benchmarks of every module
	@for m in $(MODULES); do (cd $$m && go test -run '^$$' -bench . -benchmem ./...); done

.PHONY: clean
clean: ## remove build output and the local run directory
	rm -rf $(BIN) .run
