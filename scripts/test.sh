#!/usr/bin/env bash
# Runs every test of the project. Installs what the tests need first (Azurite
# into .tools/, Go modules), so it works on a fresh clone. .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/azurite.sh install
go mod download
go vet ./...
# -p 2: the machine has two cores; the handler's test binary links the
# Microsoft Graph SDK, whose first build takes minutes.
go test -p 2 -count=1 -timeout 45m ./...
# The race detector over the concurrent parts that do not link the Graph SDK
# (a race build of the SDK would cost another several minutes and gigabytes).
go test -p 2 -count=1 -race -timeout 20m \
	./internal/azfunc/... ./internal/azstorage/... ./internal/importfile/... ./internal/m365sim/... \
	./internal/mapping/... ./internal/spo/... ./internal/syncer/...
