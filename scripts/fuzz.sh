#!/usr/bin/env bash
# fuzz.sh runs every native Go fuzz target of the repository (func FuzzXxx(f
# *testing.F) in a package's test files), one after the other, each for
# FUZZTIME, and reports the executions of each. `make fuzz` calls it;
# scripts/test.sh calls it with FUZZTIME=3s after the tests.
#
#   scripts/fuzz.sh [PATTERN...]   only the targets whose "importpath.FuzzName"
#                                  matches one of the extended regexps
#   scripts/fuzz.sh --list [PATTERN...]   list the targets, run nothing
#
# Environment:
#   FUZZTIME       how long each target runs (default 60s): a Go duration, a
#                  number of seconds, or Nx for N executions
#   FUZZ_PARALLEL  fuzzing workers per target (default: go's, GOMAXPROCS)
#   FUZZMINIMIZETIME  how long go may minimize one input (default 5s)
#   FUZZ_REPORT    where the Markdown table of the run goes
#                  (default .build/fuzz-report.md, for the README's figures)
#
# Targets are found in the files themselves (go list gives each package's
# test files), so a new target is run without any edit here. A target is
# run with `go test -run '^$' -fuzz '^Name$'`: its seed corpus
# (testdata/fuzz/Name) first, then new inputs. A finding is an input that
# fails the target: Go writes it to testdata/fuzz/Name/<hash> in the
# package, where it stays as a corpus entry once the bug is fixed; the
# script names it and exits 1 after the last target.
#
# go1.26 can fail a target at the very end of its time with "context
# deadline exceeded" and no input (a race in the fuzzing coordinator, fixed
# in Go 1.27: https://go.dev/issue/75804). Such an end writes no input and
# counts as passed, marked "ok (go#75804)".
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

list=false
if [[ ${1:-} == --list ]]; then
	list=true
	shift
fi
FUZZTIME=${FUZZTIME:-60s}
FUZZMINIMIZETIME=${FUZZMINIMIZETIME:-5s}
[[ $FUZZTIME =~ ^[0-9]+$ ]] && FUZZTIME=${FUZZTIME}s
REPORT=${FUZZ_REPORT:-.build/fuzz-report.md}
LOGS=.build/fuzz
mkdir -p "$LOGS" "$(dirname "$REPORT")"

# The test binary's timeout: the fuzzing time plus ten minutes for the
# instrumented build and the seed corpus (the Graph SDK's takes minutes).
if [[ $FUZZTIME =~ ^([0-9]+)([smh])$ ]]; then
	n=${BASH_REMATCH[1]}
	case ${BASH_REMATCH[2]} in
	m) n=$((n * 60)) ;;
	h) n=$((n * 3600)) ;;
	esac
	timeout="$((n + 600))s"
elif [[ $FUZZTIME =~ ^[0-9]+x$ || $FUZZTIME =~ ^([0-9]+[hms])+$ ]]; then
	timeout=2h
else
	echo "fuzz.sh: FUZZTIME=$FUZZTIME is not a duration (60s, 5m), a number of seconds or Nx" >&2
	exit 2
fi

# targets: "importpath name" per line, in package order.
targets=$(go list -f '{{.ImportPath}} {{.Dir}} {{join .TestGoFiles " "}} {{join .XTestGoFiles " "}}' ./... |
	while read -r pkg dir files; do
		[[ -n $files ]] || continue
		for f in $files; do
			sed -nE 's/^func (Fuzz[A-Za-z0-9_]*)\([A-Za-z_][A-Za-z0-9_]* \*testing\.F\).*/\1/p' "$dir/$f"
		done | sort -u | sed "s|^|$pkg |"
	done)
if (($# > 0)); then
	wanted=$(printf '%s\n' "$targets" | while read -r pkg name; do
		for p in "$@"; do
			if [[ "$pkg.$name" =~ $p ]]; then
				echo "$pkg $name"
				break
			fi
		done
	done)
	targets=$wanted
fi
if [[ -z $targets ]]; then
	echo "fuzz.sh: no fuzz target${1:+ matches $*}" >&2
	exit 1
fi

if $list; then
	printf '%s\n' "$targets"
	exit 0
fi
module=$(go list -m)
parallel=()
[[ -n ${FUZZ_PARALLEL:-} ]] && parallel=(-parallel "$FUZZ_PARALLEL")
rows=()
failed=0
echo "fuzzing $(wc -l <<<"$targets") target(s), $FUZZTIME each${FUZZ_PARALLEL:+, $FUZZ_PARALLEL worker(s)}"
while read -r pkg name; do
	rel=${pkg#"$module"/}
	log="$LOGS/${rel//\//_}.$name.log"
	# -fuzzminimizetime: go minimizes every input that finds new coverage
	# for up to 60 s by default, counting no executions meanwhile; a long
	# line of a job log kept FuzzJobLog minimizing for its whole minute.
	go test -run '^$' -fuzz "^$name\$" -fuzztime "$FUZZTIME" -fuzzminimizetime "$FUZZMINIMIZETIME" -timeout "$timeout" "${parallel[@]}" "$pkg" >"$log" 2>&1
	rc=$?
	execs=$(sed -nE 's/^fuzz: elapsed: .*, execs: ([0-9]+) .*/\1/p' "$log" | tail -n 1)
	input=$(sed -nE 's/.*Failing input written to (.*)$/\1/p' "$log" | tail -n 1)
	if ((rc == 0)); then
		result=ok
	elif [[ -n $input ]]; then
		result="FINDING: $rel/$input"
		failed=1
	elif [[ -n $execs ]] && grep -qx '    context deadline exceeded' "$log"; then
		result="ok (go#75804)"
	elif grep -q -- "--- FAIL: $name/" "$log"; then
		result="FAILED: a seed corpus entry fails (see $log)"
		failed=1
	else
		result="FAILED (see $log)"
		failed=1
	fi
	printf '%-28s %-34s %12s execs  %s\n' "$name" "$rel" "${execs:-0}" "$result"
	rows+=("| \`$name\` | \`$rel\` | ${execs:-0} | $result |")
done <<<"$targets"

{
	echo "Fuzzing run of $(date -u +%Y-%m-%dT%H:%MZ), $(go env GOVERSION), FUZZTIME=$FUZZTIME per target${FUZZ_PARALLEL:+, $FUZZ_PARALLEL worker(s)} on $(nproc) CPU(s)."
	echo
	echo "| target | package | executions | result |"
	echo "|---|---|---:|---|"
	printf '%s\n' "${rows[@]}"
} >"$REPORT"
echo
cat "$REPORT"
echo
echo "(written to $REPORT; logs in $LOGS/)"
exit $failed
