#!/usr/bin/env bash
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
set -euo pipefail

readonly graph=https://graph.microsoft.com/v1.0
readonly graph_app_id=00000003-0000-0000-c000-000000000000
readonly spo_app_id=00000003-0000-0ff1-ce00-000000000000

# resource app id | app role | what profilesync uses it for
readonly grants=(
	"$graph_app_id|User.Read.All|Microsoft Graph: read users, their delta changes, managers and extension attributes"
	"$spo_app_id|Sites.FullControl.All|SharePoint: upload import files to SPO_SITE_URL/SPO_FOLDER and queue bulk profile imports (Sites.Selected cannot, pnp/powershell#3248)"
	"$spo_app_id|User.ReadWrite.All|SharePoint: write user profile properties through the bulk import"
)

usage() {
	sed -n 's/^# \{0,1\}//; 2,/^set -euo/p' "$0" | sed '$d'
}

die() {
	echo "grant-permissions.sh: $*" >&2
	exit 1
}

dry_run=false
principal_id=""
while (($# > 0)); do
	case $1 in
	--dry-run) dry_run=true ;;
	-h | --help)
		usage
		exit 0
		;;
	-*) die "unknown option $1 (see --help)" ;;
	*)
		[[ -z $principal_id ]] || die "more than one principal id given"
		principal_id=$1
		;;
	esac
	shift
done

if [[ -z $principal_id ]]; then
	principal_id=${PROFILESYNC_IDENTITY_PRINCIPAL_ID:-}
fi
if [[ -z $principal_id ]] && command -v azd >/dev/null 2>&1; then
	principal_id=$(azd env get-values 2>/dev/null |
		sed -n 's/^PROFILESYNC_IDENTITY_PRINCIPAL_ID="\{0,1\}\([^"]*\)"\{0,1\}$/\1/p') || true
fi
[[ -n $principal_id ]] || die "no principal id: pass the managed identity's principal id, or run from the azd project after azd up"
[[ $principal_id =~ ^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$ ]] ||
	die "$principal_id is not an object id (a GUID)"

# get URL [QUERY]: GET a Graph URL, printing the JMESPath QUERY's result as text.
get() {
	az rest --method GET --url "$1" --query "${2:-@}" --output tsv
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

declare -A resource_ids=()
for grant in "${grants[@]}"; do
	IFS='|' read -r app_id role purpose <<<"$grant"
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
	if [[ -z ${resource_ids[$app_id]:-} ]]; then
		resource_ids[$app_id]=$(get "$sp_url" id) ||
			die "no service principal for $app_id in this tenant"
	fi
	resource_id=${resource_ids[$app_id]}
	role_id=$(get "$sp_url" "appRoles[?value=='$role' && contains(allowedMemberTypes, 'Application')].id | [0]")
	[[ -n $role_id && $role_id != None ]] || die "$app_id has no application role $role"
	existing=$(get "$graph/servicePrincipals/$principal_id/appRoleAssignments" \
		"length(value[?resourceId=='$resource_id' && appRoleId=='$role_id'])")
	if [[ $existing != 0 ]]; then
		echo "  already granted: skipped"
		continue
	fi
	az rest --method POST --url "$graph/servicePrincipals/$principal_id/appRoleAssignments" \
		--headers "Content-Type=application/json" \
		--body "{\"principalId\":\"$principal_id\",\"resourceId\":\"$resource_id\",\"appRoleId\":\"$role_id\"}" \
		--output none
	echo "  granted"
done

echo
if $dry_run; then
	echo "dry run done: nothing was changed"
else
	echo "done. New roles reach the app with its next tokens; managed identity tokens are cached, so allow up to a few hours."
fi
