#!/bin/sh
# Checks what deploying profilesync with azd needs, and names the command that
# fixes each gap. Every problem is listed, then it exits 1; it changes nothing.
#
# Usage: scripts/preflight.sh          before the first azd command, from the
#                                      repository root (README, "Deploy to Azure")
#        scripts/preflight.sh --hook   azure.yaml's preprovision hook
#
# Before azd (no --hook) it checks azd itself:
#   - azd 1.20.0 or later: the first release that knows `language: custom`
#     (Azure/azure-dev CHANGELOG 1.20.0, #5771); azure.yaml's requiredVersions
#     says the same to an older azd;
#   - the alpha feature language.custom is on. azd refuses azure.yaml's
#     `language: custom` without it ("service is using language 'custom'
#     (alpha) but it is not enabled", Azure/azure-dev cli/azd/cmd/container.go),
#     and it checks that while loading azure.yaml, before any hook runs: no
#     hook can check it, so this script asks azd (`azd config list-alpha`,
#     which weighs AZD_ALPHA_ENABLE_LANGUAGE_CUSTOM and `azd config` as azd
#     does);
#   - the current directory is the repository root: azd resolves the service's
#     `dist: .build/app` against the directory it runs in (Azure/azure-dev
#     cli/azd/pkg/project/framework_service_custom.go returns it unchanged), so
#     azd run from a subdirectory would deploy the wrong folder or none;
#   - az is installed (infra/grant-permissions.sh and the README's steps use it).
# Both ways it checks the tools the prepackage hook (scripts/package.sh) needs,
# go and zip or python3, so `azd provision` fails before creating anything
# rather than `azd deploy` after; and, as the hook, the azd environment's
# values that infra/main.bicep would refuse later (azd passes them to hooks).
#
# Linux and macOS (POSIX sh; macOS's /bin/sh and bash 3.2 do). Windows: WSL.
set -eu

hook=false
case ${1:-} in
--hook) hook=true ;;
"") ;;
-h | --help)
	sed -n 's/^# \{0,1\}//; 2,/^set -eu/p' "$0" | sed '$d'
	exit 0
	;;
*)
	echo "preflight.sh: unknown argument $1 (see --help)" >&2
	exit 2
	;;
esac

# The lowest azd that has the custom language (and its alpha flag).
min_azd=1.20.0

problems=0
ok() { echo "ok    $*"; }
fail() {
	problems=$((problems + 1))
	echo "FAIL  $*"
}
note() { echo "      $*"; }

root=$(cd "$(dirname "$0")/.." && pwd -P)

case $(uname -s) in
Linux | Darwin) ;;
*)
	fail "$(uname -s) is not supported: deploy from Linux, macOS or WSL (Windows Subsystem for Linux)"
	note "azure.yaml's hooks are POSIX sh scripts; see docs/deploy.md, \"Windows\""
	;;
esac

# version_at_least HAVE WANT: true when semantic version HAVE >= WANT
# (major.minor.patch; a pre-release of WANT, such as 1.20.0-beta.1, is older).
version_at_least() {
	have=$1 want=$2
	have_core=${have%%[-+]*}
	old_ifs=$IFS
	IFS=.
	# shellcheck disable=SC2086 # split on dots on purpose
	set -- $have_core 0 0 0
	h1=$1 h2=$2 h3=$3
	# shellcheck disable=SC2086
	set -- $want 0 0 0
	w1=$1 w2=$2 w3=$3
	IFS=$old_ifs
	for n in "$h1" "$h2" "$h3"; do
		case $n in '' | *[!0-9]*) return 1 ;; esac
	done
	[ "$h1" -ne "$w1" ] && { [ "$h1" -gt "$w1" ]; return; }
	[ "$h2" -ne "$w2" ] && { [ "$h2" -gt "$w2" ]; return; }
	[ "$h3" -ne "$w3" ] && { [ "$h3" -gt "$w3" ]; return; }
	case $have in "$have_core"-*) return 1 ;; esac # a pre-release of WANT
	return 0
}

if ! $hook; then
	if [ "$(pwd -P)" = "$root" ]; then
		ok "running in the repository root ($root)"
	else
		fail "run this, and every azd command, from the repository root: cd \"$root\""
		note "azd resolves azure.yaml's dist: .build/app against the directory it runs in (or use azd -C \"$root\" ...)"
	fi

	if ! command -v azd >/dev/null 2>&1; then
		fail "azd (Azure Developer CLI) is not installed: https://learn.microsoft.com/azure/developer/azure-developer-cli/install-azd"
	else
		azd_version=$(azd version 2>/dev/null | sed -n 's/^azd version \([0-9][0-9.]*[^ ]*\).*/\1/p' | head -n 1)
		if [ -z "$azd_version" ]; then
			fail "could not read azd's version (azd version); profilesync needs azd $min_azd or later"
		elif version_at_least "$azd_version" "$min_azd"; then
			ok "azd $azd_version (needs $min_azd or later)"
		else
			fail "azd $azd_version is too old: profilesync needs azd $min_azd or later (the custom language); update azd"
		fi

		# azd's own view of the flag: Status On or Off under Name: language.custom.
		status=$(azd config list-alpha 2>/dev/null |
			sed -n '/^Name: language\.custom$/,/^Status:/s/^Status: *//p' | head -n 1)
		case $status in
		[Oo]n) ok "azd alpha feature language.custom is on" ;;
		*)
			if [ -z "$status" ]; then
				fail "azd does not list the alpha feature language.custom (azd config list-alpha): update azd to $min_azd or later"
			else
				fail "azd's alpha feature language.custom is off, and azd refuses azure.yaml's language: custom without it. Run:"
				note "azd config set alpha.language.custom on"
				note "(or, for this shell only: export AZD_ALPHA_ENABLE_LANGUAGE_CUSTOM=true)"
			fi
			case ${AZD_ALPHA_ENABLE_LANGUAGE_CUSTOM-unset} in
			unset | 1 | t | T | true | TRUE | True | 0 | f | F | false | FALSE | False) ;;
			*) note "AZD_ALPHA_ENABLE_LANGUAGE_CUSTOM=$AZD_ALPHA_ENABLE_LANGUAGE_CUSTOM is ignored by azd: it takes true or false (on/off is for azd config set)" ;;
			esac
			;;
		esac
	fi

	if command -v az >/dev/null 2>&1; then
		ok "az (Azure CLI) is installed"
	else
		fail "az (Azure CLI) is not installed: https://learn.microsoft.com/cli/azure/install-azure-cli (step 2 and the README's commands use it)"
	fi
fi

# What scripts/package.sh (the prepackage hook) needs.
if command -v "${GO:-go}" >/dev/null 2>&1; then
	ok "$("${GO:-go}" version 2>/dev/null || echo go) (builds the Linux handler)"
else
	fail "Go is not installed (scripts/package.sh builds the handler with it): https://go.dev/dl/ ($(sed -n 's/^go //p' "$root/go.mod" | head -n 1) or later)"
fi
if command -v zip >/dev/null 2>&1 || command -v python3 >/dev/null 2>&1; then
	ok "zip or python3 (zips the package)"
else
	fail "neither zip nor python3 is installed (scripts/package.sh zips the package with one of them)"
fi

if $hook; then
	# The azd environment's values, as infra/main.bicep will check them.
	case ${SPO_SITE_URL:-} in
	"" | https://*) ;;
	*) fail "SPO_SITE_URL=$SPO_SITE_URL must be an https:// URL: azd env set SPO_SITE_URL https://contoso.sharepoint.com/sites/hr" ;;
	esac
	check_int() { # NAME VALUE LOW HIGH WHY
		case $2 in
		'' | *[!0-9]*) fail "$1=$2 is not a whole number; $5" ;;
		*) if [ "$2" -lt "$3" ] || [ "$2" -gt "$4" ]; then fail "$1=$2 is outside $3-$4; $5"; fi ;;
		esac
	}
	if [ -n "${MAXIMUM_INSTANCE_COUNT:-}" ]; then
		check_int MAXIMUM_INSTANCE_COUNT "$MAXIMUM_INSTANCE_COUNT" 40 1000 \
			"Flex Consumption accepts 40-1000 in every region (below 40: MAXIMUM_INSTANCE_COUNT_PREVIEW, docs/deploy.md)"
	fi
	if [ -n "${MAXIMUM_INSTANCE_COUNT_PREVIEW:-}" ]; then
		check_int MAXIMUM_INSTANCE_COUNT_PREVIEW "$MAXIMUM_INSTANCE_COUNT_PREVIEW" 0 39 \
			"it is 1-39 where a region offers the preview, 0 to leave it unused (docs/deploy.md)"
	fi
	if [ -n "${CLEANUP_AFTER_DAYS:-}" ]; then
		check_int CLEANUP_AFTER_DAYS "$CLEANUP_AFTER_DAYS" 0 36500 "days after which import files are deleted; 0 keeps them"
	fi
	case ${LOG_LEVEL:-info} in
	debug | info | warn | error) ;;
	*) fail "LOG_LEVEL=$LOG_LEVEL is not debug, info, warn or error (in lowercase: infra/main.bicep allows only these)" ;;
	esac
	if [ -n "${SYNC_SCHEDULE:-}" ]; then
		set -f # the fields are words, not file patterns
		# shellcheck disable=SC2086 # count the fields
		set -- $SYNC_SCHEDULE
		set +f
		[ $# -eq 6 ] || [ $# -eq 5 ] ||
			fail "SYNC_SCHEDULE=\"$SYNC_SCHEDULE\" has $# fields; NCRONTAB has six: second minute hour day month day-of-week (\"0 0 2 * * *\")"
	fi
fi

if [ "$problems" -gt 0 ]; then
	echo
	echo "preflight: $problems problem(s); fix them and run it again (docs/deploy.md explains each)."
	exit 1
fi
echo "preflight: ready"
