#!/usr/bin/env bash
# mariadb.sh runs a throwaway MariaDB on 127.0.0.1 for Azurite's SQL blob
# metadata store (AZURITE_DB). Azurite's default store (LokiJS) scans every
# blob of the account on each blob operation, so a container of 100,000s of
# blobs takes hours to fill; with AZURITE_DB its lookups are indexed. Only
# `make reliability` (retention at 150,000 records) uses it.
#
#   scripts/mariadb.sh install       install Debian's mariadb-server if missing (needs root)
#   scripts/mariadb.sh start DIR     start MariaDB with its data in DIR; prints AZURITE_DB=…
#   scripts/mariadb.sh stop DIR      stop it and remove DIR
#
# Environment: MARIADB_PORT (default: a free port picked by the kernel).
set -euo pipefail

die() {
	echo "mariadb.sh: $*" >&2
	exit 1
}

cmd_install() {
	command -v mariadbd >/dev/null 2>&1 && return 0
	[[ "$(id -u)" == 0 ]] || die "mariadb-server is not installed and installing it needs root (apt-get install mariadb-server)"
	echo "mariadb.sh: installing mariadb-server" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q mariadb-server >&2 || die "apt-get install mariadb-server failed"
}

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

cmd_start() {
	local dir="${1:-}"
	[[ -n "$dir" ]] || die "usage: $0 start DIR"
	cmd_install
	mkdir -p "$dir"
	dir="$(cd "$dir" && pwd)"
	local port="${MARIADB_PORT:-$(free_port)}"
	local user=()
	[[ "$(id -u)" != 0 ]] || user=(--user=root)
	if [[ ! -d "$dir/data/mysql" ]]; then
		mariadb-install-db --no-defaults "${user[@]}" --datadir="$dir/data" --auth-root-authentication-method=normal \
			--skip-test-db >"$dir/install.log" 2>&1 || { cat "$dir/install.log" >&2; die "mariadb-install-db failed"; }
	fi
	setsid mariadbd --no-defaults "${user[@]}" --datadir="$dir/data" --socket="$dir/mysqld.sock" \
		--pid-file="$dir/mysqld.pid" --bind-address=127.0.0.1 --port="$port" --skip-grant-tables \
		--innodb-flush-log-at-trx-commit=0 --skip-log-bin >"$dir/mariadb.log" 2>&1 </dev/null &
	echo "$!" >"$dir/pid"
	local deadline=$((SECONDS + 60))
	until mariadb --no-defaults -h 127.0.0.1 -P "$port" -u root -e 'CREATE DATABASE IF NOT EXISTS azurite_blob' >/dev/null 2>&1; do
		if ((SECONDS >= deadline)); then
			cat "$dir/mariadb.log" >&2
			die "MariaDB did not answer on port $port within 60 s"
		fi
		sleep 0.3
	done
	echo "AZURITE_DB=mysql://root:@127.0.0.1:$port/azurite_blob"
}

cmd_stop() {
	local dir="${1:-}"
	[[ -n "$dir" && -d "$dir" ]] || return 0
	if [[ -f "$dir/pid" ]]; then
		local pid
		pid="$(<"$dir/pid")"
		kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
		local deadline=$((SECONDS + 20))
		while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
		kill -KILL -- "-$pid" 2>/dev/null || true
	fi
	rm -rf "$dir"
}

case "${1:-}" in
install) cmd_install ;;
start) shift; cmd_start "$@" ;;
stop) shift; cmd_stop "$@" ;;
*) die "usage: $0 install | start DIR | stop DIR" ;;
esac
