#!/bin/sh
# Grants profilesync's managed identity the application permissions (app
# roles) that ARM templates cannot grant, through Microsoft Graph with `az rest`:
#
#   Microsoft Graph       User.Read.All          read users, their delta changes,
#                                                managers and extension attributes
#   SharePoint Online     Sites.FullControl.All  upload the import files to the
#                                                site's library and call the
#                                                tenant-level bulk profile import
#                                                API (Office365Tenant)
#   SharePoint Online     User.ReadWrite.All     write user profile properties
#                                                through that import
#
# Sites.Selected is not enough: it grants access to chosen sites only, and the
# bulk import API is a tenant-level operation that then fails with an
# authorization error (pnp/powershell#3248, where PnP's docs had to be
# corrected to require Sites.FullControl.All).
#
# Idempotent: existing assignments are skipped. Run it as a user holding an
# Entra role that may grant app roles (Privileged Role Administrator or Global
# Administrator), after `az login`.
#
# Usage: infra/grant-permissions.sh [--dry-run] [PRINCIPAL_ID]
#
# PRINCIPAL_ID is the managed identity's object (principal) id; without it the
# script uses $PROFILESYNC_IDENTITY_PRINCIPAL_ID, then the value `azd up` saved
# (azd env get-values). --dry-run prints every request instead of sending it.
#
# POSIX sh on purpose (no arrays, no [[ ]]): it runs the same under macOS's
# /bin/sh and /bin/bash 3.2, dash, and bash 4 or 5 (handler/package_test.go
# runs it under sh and bash and rejects bash-only syntax).
set -eu

graph=https://graph.microsoft.com/v1.0
graph_app_id=00000003-0000-0000-c000-000000000000
spo_app_id=00000003-0000-0ff1-ce00-000000000000

# One grant a line: resource app id|app role|what profilesync uses it for.
grants="$graph_app_id|User.Read.All|Microsoft Graph: read users, their delta changes, managers and extension attributes
$spo_app_id|Sites.FullControl.All|SharePoint: upload import files to SPO_SITE_URL/SPO_FOLDER and queue bulk profile imports (Sites.Selected cannot, pnp/powershell#3248)
$spo_app_id|User.ReadWrite.All|SharePoint: write user profile properties through the bulk import"

usage() {
	sed -n 's/^# \{0,1\}//; 2,/^set -eu/p' "$0" | sed '$d'
}

die() {
	echo "grant-permissions.sh: $*" >&2
	exit 1
}

dry_run=false
principal_id=""
while [ $# -gt 0 ]; do
	case $1 in
	--dry-run) dry_run=true ;;
	-h | --help)
		usage
		exit 0
		;;
	-*) die "unknown option $1 (see --help)" ;;
	*)
		[ -z "$principal_id" ] || die "more than one principal id given"
		principal_id=$1
		;;
	esac
	shift
done

if [ -z "$principal_id" ]; then
	principal_id=${PROFILESYNC_IDENTITY_PRINCIPAL_ID:-}
fi
if [ -z "$principal_id" ] && command -v azd >/dev/null 2>&1; then
	principal_id=$(azd env get-values 2>/dev/null |
		sed -n 's/^PROFILESYNC_IDENTITY_PRINCIPAL_ID="\{0,1\}\([^"]*\)"\{0,1\}$/\1/p') || true
fi
[ -n "$principal_id" ] || die "no principal id: pass the managed identity's principal id, or run from the azd project after azd up"
# A GUID: 36 characters, 8-4-4-4-12 hex digits (the length check also rules
# out a second line that grep alone would accept).
if [ ${#principal_id} -ne 36 ] ||
	! printf '%s\n' "$principal_id" | grep -Eq '^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$'; then
	die "$principal_id is not an object id (a GUID)"
fi

# get URL [QUERY]: GET a Graph URL, printing the JMESPath QUERY's result as text.
get() {
	az rest --method GET --url "$1" --query "${2:-@}" --output tsv </dev/null
}

if $dry_run; then
	echo "dry run: nothing is sent; <...> stands for values looked up when run for real"
	echo "GET  $graph/servicePrincipals/$principal_id   (the identity: must exist)"
	echo "GET  $graph/servicePrincipals/$principal_id/appRoleAssignments   (assignments it already has)"
else
	command -v az >/dev/null 2>&1 || die "the Azure CLI (az) is not installed"
	name=$(get "$graph/servicePrincipals/$principal_id" displayName) ||
		die "service principal $principal_id not found (is it the identity's principal id, and are you signed in to its tenant?)"
	echo "managed identity: $name ($principal_id)"
fi

# Resource service principal ids already looked up, one "appId id" a line
# (the script once used a bash 4 associative array, which macOS's bash 3.2
# refuses).
resource_ids=""

# The loop reads the grants from file descriptor 3, so nothing inside it (az)
# can swallow them from standard input; a here-document keeps the loop in this
# shell, so die() ends the script.
while IFS='|' read -r app_id role purpose <&3; do
	echo
	echo "$role on $app_id"
	echo "  for: $purpose"
	sp_url="$graph/servicePrincipals(appId='$app_id')"
	if $dry_run; then
		echo "  GET  $sp_url   (resource service principal: id, and the id of appRoles[value=$role])"
		echo "  POST $graph/servicePrincipals/$principal_id/appRoleAssignments"
		echo "       {\"principalId\":\"$principal_id\",\"resourceId\":\"<id of $app_id>\",\"appRoleId\":\"<id of $role>\"}"
		echo "       (skipped when the identity already has it)"
		continue
	fi
	resource_id=$(printf '%s\n' "$resource_ids" | sed -n "s/^$app_id //p")
	if [ -z "$resource_id" ]; then
		resource_id=$(get "$sp_url" id) || die "no service principal for $app_id in this tenant"
		[ -n "$resource_id" ] || die "no service principal for $app_id in this tenant"
		resource_ids="$resource_ids
$app_id $resource_id"
	fi
	role_id=$(get "$sp_url" "appRoles[?value=='$role' && contains(allowedMemberTypes, 'Application')].id | [0]")
	case $role_id in
	"" | None) die "$app_id has no application role $role" ;;
	esac
	existing=$(get "$graph/servicePrincipals/$principal_id/appRoleAssignments" \
		"length(value[?resourceId=='$resource_id' && appRoleId=='$role_id'])")
	if [ "$existing" != 0 ]; then
		echo "  already granted: skipped"
		continue
	fi
	az rest --method POST --url "$graph/servicePrincipals/$principal_id/appRoleAssignments" \
		--headers "Content-Type=application/json" \
		--body "{\"principalId\":\"$principal_id\",\"resourceId\":\"$resource_id\",\"appRoleId\":\"$role_id\"}" \
		--output none </dev/null
	echo "  granted"
done 3<<EOF
$grants
EOF

echo
if $dry_run; then
	echo "dry run done: nothing was changed"
else
	echo "done. New roles reach the app with its next tokens; managed identity tokens are cached, so allow up to a few hours."
fi
