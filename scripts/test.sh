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
# The race detector over every concurrent part, the handler included: its
# end-to-end tests then build the handler they start with -race too, and
# fail on any race report in its output. (A race build of the Graph SDK
# costs several more minutes and gigabytes once; the build cache keeps it.)
go test -p 2 -count=1 -race -timeout 40m \
	./handler/... ./internal/azfunc/... ./internal/azstorage/... ./internal/crashpoint/... ./internal/graph/... \
	./internal/importfile/... ./internal/m365sim/... ./internal/mapping/... ./internal/spo/... ./internal/syncer/...
# Every fuzz target for a few seconds of new inputs (their seed corpora ran
# above, with the tests); a finding fails the run. `make fuzz` runs them
# longer.
FUZZTIME=3s FUZZ_REPORT=.build/fuzz-smoke.md scripts/fuzz.sh
