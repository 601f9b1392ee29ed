# profilesync — run `make help` for the targets.
SHELL := /bin/bash
GO    ?= go
BUILD := .build
APP   := $(BUILD)/app
FUZZTIME ?= 60s

#? help: list the targets
help:
	@sed -n 's/^#?//p' $(MAKEFILE_LIST) | column -t -s ':'

#? demo: the main job end to end on the local stack (Azurite + Microsoft 365 simulator)
demo:
	scripts/azurite.sh install
	scripts/mariadb.sh install
	$(GO) run ./cmd/demo

#? test: every test (installs Azurite into .tools/ first); .ci/run calls this
test:
	scripts/test.sh

#? reliability: the full kill matrix, the fault storms and retention at 150,000 records (each part under 10 minutes; MariaDB for Azurite, installed if missing)
reliability:
	scripts/azurite.sh install
	scripts/mariadb.sh install
	set -o pipefail; PROFILESYNC_RELIABILITY=full $(GO) test -count=1 -timeout 30m -run 'TestKillMatrix|TestFaultStorms|TestAzuriteStoppedMidRun' -v ./handler | grep -E '^(kill matrix|point|[a-z-]+#[0-9]|---|ok|FAIL)|faults injected|storage outage'
	set -o pipefail; PROFILESYNC_RETENTION_SQL=1 PROFILESYNC_RETENTION_RECORDS=150000 $(GO) test -count=1 -timeout 60m -run 'TestRetentionAndListingsAtScale' -v ./handler | grep -E 'generated|listing|pruned|---|^ok|^FAIL'

#? fuzz: every fuzz target in turn for FUZZTIME each (default 60s); the executions go to .build/fuzz-report.md
fuzz:
	FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

#? bench: the benchmarks (pipeline, simulator, import file, mapping)
bench:
	scripts/azurite.sh install
	scripts/mariadb.sh install
	$(GO) test -run '^$$' -bench . -benchmem -timeout 60m ./...

#? build: the handler and the simulator for this machine, into .build/bin
build:
	$(GO) build -o $(BUILD)/bin/handler ./handler
	$(GO) build -o $(BUILD)/bin/m365sim ./cmd/m365sim

#? stage: the deployable app folder .build/app (host.json, function folders, Linux handler)
stage:
	rm -rf $(APP) && mkdir -p $(APP)
	cp host.json $(APP)/
	cp -r functions/* $(APP)/
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build -trimpath -ldflags='-s -w' -o $(APP)/handler ./handler
	cp local.settings.json $(APP)/

#? package: the deployment zip .build/profilesync.zip (the staged app without local.settings.json)
package:
	GO=$(GO) BUILD_DIR=$(BUILD) scripts/package.sh

#? start: run the staged app with Azure Functions Core Tools (func must be installed)
start: stage
	cd $(APP) && func start

#? sim: run the Microsoft 365 simulator on ports 8370/8371 (the ports local.settings.json uses)
sim:
	$(GO) run ./cmd/m365sim --port 8370 --users 2000 --identity-header local-dev-identity-header

.PHONY: help demo test reliability fuzz bench build stage package start sim
