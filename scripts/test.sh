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
