#!/bin/sh
# Builds the deployment package of profilesync: stages the app as `make stage`
# does, but without local.settings.json, into $BUILD_DIR/app, and zips it into
# $BUILD_DIR/profilesync.zip with exactly these entries:
#
#   host.json  handler  Api/function.json  ImportStatus/function.json
#   SyncRun/function.json  SyncTimer/function.json
#
# (one <Function>/function.json per folder under functions/). `handler` is the
# static Linux x86-64 binary, stored with mode 0755. The zip is ready for
# `az functionapp deployment source config-zip`; azd zips $BUILD_DIR/app itself
# (azure.yaml runs this script as its prepackage hook).
#
# Environment: BUILD_DIR (default .build, relative to the repository root),
# GO (default go), ZIPPER (zip or python3; default zip when installed).
#
# POSIX sh on purpose: azd runs hooks with `sh` (on Linux and macOS it runs
# this file as `/bin/sh -c <path>`, so it must keep its execute bit), and
# macOS's bash is 3.2.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
if [ ! -f "$root/host.json" ] && [ -f ./host.json ]; then
	root=$(pwd) # run from a copy (azd hook temp file): the hook's cwd is the project
fi
cd "$root"

GO=${GO:-go}
build=${BUILD_DIR:-.build}
mkdir -p "$build"
build=$(cd "$build" && pwd)
app=$build/app
out=$build/profilesync.zip

if [ -z "${ZIPPER:-}" ]; then
	if command -v zip >/dev/null 2>&1; then ZIPPER=zip; else ZIPPER=python3; fi
fi
command -v "$ZIPPER" >/dev/null 2>&1 || {
	echo "package.sh: $ZIPPER is not installed (install zip or python3)" >&2
	exit 1
}

echo "staging $app"
rm -rf "$app"
mkdir -p "$app"
cp host.json "$app/"
entries="host.json handler"
for f in functions/*/function.json; do
	name=$(basename "$(dirname "$f")")
	mkdir -p "$app/$name"
	cp "$f" "$app/$name/function.json"
	entries="$entries $name/function.json"
done
CGO_ENABLED=0 GOOS=linux GOARCH=amd64 "$GO" build -trimpath -ldflags='-s -w' -o "$app/handler" ./handler
chmod 0755 "$app/handler"

echo "zipping $out with $ZIPPER"
rm -f "$out"
case $ZIPPER in
zip)
	# -D: no directory entries; -X: no extra attributes (the Unix mode stays).
	# $entries is split on purpose: it is a list of paths without spaces.
	# shellcheck disable=SC2086
	(cd "$app" && zip -q -D -X "$out" $entries)
	;;
python3)
	# shellcheck disable=SC2086
	python3 - "$app" "$out" $entries <<'PY'
import shutil, sys, zipfile

app, out, names = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
    for name in names:
        info = zipfile.ZipInfo.from_file(f"{app}/{name}", name)
        mode = 0o755 if name == "handler" else 0o644
        info.external_attr = (0o100000 | mode) << 16  # regular file + permissions
        info.create_system = 3  # Unix, so readers honour external_attr
        info.compress_type = zipfile.ZIP_DEFLATED
        with open(f"{app}/{name}", "rb") as src, z.open(info, "w") as dst:
            shutil.copyfileobj(src, dst)
PY
	;;
*)
	echo "package.sh: ZIPPER must be zip or python3, not $ZIPPER" >&2
	exit 1
	;;
esac
echo "built $out"
