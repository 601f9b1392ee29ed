#!/usr/bin/env bash
# azurite.sh installs and runs a throwaway Azurite (the Azure Storage emulator)
# for local runs and tests.
#
#   scripts/azurite.sh install        install azurite@3.35.0 into .tools/azurite
#   scripts/azurite.sh start [DIR]    start blob+queue(+table) on 127.0.0.1, data in DIR
#   scripts/azurite.sh stop DIR       stop the instance started in DIR and remove DIR
#   scripts/azurite.sh status DIR     report whether the instance in DIR is running
#   scripts/azurite.sh pause DIR      stop the instance but keep DIR and its data;
#                                     start DIR (same ports) brings it back
#
# Environment:
#   AZURITE_BLOB_PORT  (default 10000)   AZURITE_QUEUE_PORT (default 10001)
#   AZURITE_TABLE_PORT (default 10002; 0 = any free port)
#   AZURITE_WATCH_PID  if set, Azurite is stopped (and DIR removed) once that
#                      process is gone: test binaries pass their own pid so a
#                      killed test run leaves nothing behind.
#
# Azurite 3.35.0 is the newest release that runs on Node.js 20 (3.36+ need
# Node >= 21). --skipApiVersionCheck is required because azblob v1.8.3 sends an
# x-ms-version newer than any Azurite release knows.
set -euo pipefail

readonly AZURITE_VERSION=3.35.0
readonly ACCOUNT=devstoreaccount1
readonly ACCOUNT_KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
readonly START_TIMEOUT=30 # seconds to wait for both ports to answer
readonly STOP_TIMEOUT=10  # seconds to wait for the process group to exit

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT
readonly PREFIX="$ROOT/.tools/azurite"
readonly BIN="$PREFIX/node_modules/.bin/azurite"

die() {
	echo "azurite.sh: $*" >&2
	exit 1
}

usage() {
	echo "usage: $0 install | start [DIR] | stop DIR | status DIR | pause DIR" >&2
	exit 2
}

installed_version() {
	local pkg="$PREFIX/node_modules/azurite/package.json"
	[[ -f "$pkg" ]] || return 0
	node -p "require(process.argv[1]).version" "$pkg" 2>/dev/null || true
}

is_installed() {
	[[ "$(installed_version)" == "$AZURITE_VERSION" && -x "$BIN" ]]
}

cmd_install() {
	command -v node >/dev/null 2>&1 || die "node is not installed (Azurite needs Node.js >= 20; install it, e.g. apt-get install nodejs npm)"
	command -v npm >/dev/null 2>&1 || die "npm is not installed (install it, e.g. apt-get install npm)"
	is_installed && return 0
	mkdir -p "$PREFIX"
	# Test binaries of several packages may start at once on a fresh
	# checkout: one installs, the others wait and then find it done. The
	# lock's descriptor is closed before Azurite starts so it is not inherited.
	if command -v flock >/dev/null 2>&1; then
		exec 9>"$PREFIX.lock"
		flock 9
	fi
	if ! is_installed; then
		echo "azurite.sh: installing azurite@$AZURITE_VERSION into $PREFIX" >&2
		npm install --prefix "$PREFIX" --no-audit --no-fund "azurite@$AZURITE_VERSION" >&2 ||
			die "npm install azurite@$AZURITE_VERSION failed"
		is_installed || die "npm install finished but $BIN is missing"
	fi
	exec 9>&-
}

# answers PORT succeeds when something on 127.0.0.1:PORT speaks HTTP (any status).
answers() {
	local code
	code="$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$1/" 2>/dev/null || true)"
	[[ -n "$code" && "$code" != 000 ]]
}

read_pid() {
	local file="$1/azurite.pid"
	[[ -f "$file" ]] || return 1
	local pid
	pid="$(<"$file")"
	[[ "$pid" =~ ^[0-9]+$ ]] || return 1
	echo "$pid"
}

connection_string() {
	printf 'DefaultEndpointsProtocol=http;AccountName=%s;AccountKey=%s;BlobEndpoint=http://127.0.0.1:%s/%s;QueueEndpoint=http://127.0.0.1:%s/%s;' \
		"$ACCOUNT" "$ACCOUNT_KEY" "$1" "$ACCOUNT" "$2" "$ACCOUNT"
}

cmd_start() {
	command -v curl >/dev/null 2>&1 || die "curl is not installed (needed to probe the ports)"
	cmd_install
	local blob_port="${AZURITE_BLOB_PORT:-10000}" queue_port="${AZURITE_QUEUE_PORT:-10001}"
	local table_port="${AZURITE_TABLE_PORT:-10002}"
	local port
	for port in "$blob_port" "$queue_port" "$table_port"; do
		[[ "$port" =~ ^[0-9]+$ ]] || die "invalid port $port"
	done
	[[ "$blob_port" != 0 && "$queue_port" != 0 ]] || die "AZURITE_BLOB_PORT and AZURITE_QUEUE_PORT must be explicit ports"

	local dir="${1:-}" tmp=""
	if [[ -z "$dir" ]]; then
		dir="$(mktemp -d "${TMPDIR:-/tmp}/azurite.XXXXXX")"
		tmp="$dir"
	fi
	mkdir -p "$dir/data"
	dir="$(cd "$dir" && pwd)"
	local pid
	if pid="$(read_pid "$dir")" && kill -0 "$pid" 2>/dev/null; then
		die "an Azurite (pid $pid) is already running in $dir"
	fi

	local args=(
		--blobHost 127.0.0.1 --blobPort "$blob_port"
		--queueHost 127.0.0.1 --queuePort "$queue_port"
		--tableHost 127.0.0.1 --tablePort "$table_port"
		--location "$dir/data" --skipApiVersionCheck --loose --silent
	)
	if "$BIN" --help 2>&1 | grep -q -- '--disableTelemetry'; then
		args+=(--disableTelemetry)
	fi

	# setsid makes Azurite the leader of its own process group, so stop can
	# signal the whole group; its output goes to a file so callers that read
	# our stdout (tests) are not kept waiting by an inherited pipe.
	setsid "$BIN" "${args[@]}" >"$dir/azurite.log" 2>&1 </dev/null &
	pid=$!
	echo "$pid" >"$dir/azurite.pid"

	local deadline=$((SECONDS + START_TIMEOUT))
	until answers "$blob_port" && answers "$queue_port"; do
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "azurite.sh: Azurite exited during start-up; its log:" >&2
			cat "$dir/azurite.log" >&2 || true
			rm -f "$dir/azurite.pid"
			[[ -z "$tmp" ]] || rm -rf "$tmp"
			exit 1
		fi
		if ((SECONDS >= deadline)); then
			echo "azurite.sh: ports $blob_port/$queue_port did not answer within ${START_TIMEOUT}s; Azurite log:" >&2
			cat "$dir/azurite.log" >&2 || true
			stop_group "$pid"
			rm -f "$dir/azurite.pid"
			[[ -z "$tmp" ]] || rm -rf "$tmp"
			exit 1
		fi
		sleep 0.2
	done

	if [[ -n "${AZURITE_WATCH_PID:-}" ]]; then
		start_watchdog "$AZURITE_WATCH_PID" "$pid" "$dir"
	fi

	echo "AZURITE_DIR=$dir"
	echo "AzureWebJobsStorage=$(connection_string "$blob_port" "$queue_port")"
}

# start_watchdog WATCH PID DIR stops Azurite once process WATCH has exited.
start_watchdog() {
	local watch="$1" pid="$2" dir="$3"
	[[ "$watch" =~ ^[0-9]+$ ]] || die "invalid AZURITE_WATCH_PID $watch"
	(
		while kill -0 "$watch" 2>/dev/null && kill -0 "$pid" 2>/dev/null; do
			sleep 1
		done
		# Only act if DIR still belongs to this instance (stop may have run).
		if [[ "$(cat "$dir/azurite.pid" 2>/dev/null || true)" == "$pid" ]]; then
			stop_group "$pid"
			rm -rf "$dir"
		fi
	) >/dev/null 2>&1 </dev/null &
	disown
}

# stop_group PID sends TERM to the process group led by PID, then KILL if it
# is still there after STOP_TIMEOUT seconds.
stop_group() {
	local pid="$1"
	kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || return 0
	local deadline=$((SECONDS + STOP_TIMEOUT))
	while kill -0 -- "-$pid" 2>/dev/null; do
		if ((SECONDS >= deadline)); then
			kill -KILL -- "-$pid" 2>/dev/null || true
			break
		fi
		sleep 0.1
	done
}

cmd_stop() {
	local dir="${1:-}"
	[[ -n "$dir" ]] || usage
	[[ -d "$dir" ]] || return 0
	local pid
	if pid="$(read_pid "$dir")"; then
		stop_group "$pid"
	fi
	rm -rf "$dir"
}

# cmd_pause stops Azurite and keeps its data: the pid file is cleared first,
# so the watchdog (which removes DIR when Azurite dies) leaves it alone.
cmd_pause() {
	local dir="${1:-}"
	[[ -n "$dir" && -d "$dir" ]] || usage
	local pid
	pid="$(read_pid "$dir")" || die "no Azurite running in $dir"
	echo paused >"$dir/azurite.pid"
	stop_group "$pid"
}

cmd_status() {
	local dir="${1:-}"
	[[ -n "$dir" ]] || usage
	local pid
	if pid="$(read_pid "$dir")" && kill -0 "$pid" 2>/dev/null; then
		echo "running (pid $pid, dir $dir)"
		return 0
	fi
	echo "not running (dir $dir)"
	return 1
}

main() {
	(($# >= 1)) || usage
	local cmd="$1"
	shift
	case "$cmd" in
	install) cmd_install ;;
	start) cmd_start "$@" ;;
	stop) cmd_stop "$@" ;;
	status) cmd_status "$@" ;;
	pause) cmd_pause "$@" ;;
	*) usage ;;
	esac
}

main "$@"
