#!/usr/bin/env bash
# Build kampx's Debian package on Debian 12 with dpkg-buildpackage (packaging/debian,
# pybuild), from the committed tree (git HEAD). The .deb lands in dist/ (or $1).
#
#   tools/build-deb.sh [OUTDIR]
#
# Debian 12's setuptools (66) and cython3 (0.29) are older than kampx's build needs, so
# setuptools >= 74 (with packaging >= 24.2) and Cython >= 3.1 are installed from PyPI into debian/build-deps of the
# build tree for the build step only (debian/rules); the package contains neither.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$(mkdir -p "${1:-$REPO/dist}" && cd "${1:-$REPO/dist}" && pwd)"
PYTHON="${PYTHON:-python3}"

need=()
for pkg in dpkg-dev debhelper dh-python pybuild-plugin-pyproject python3-all-dev python3-setuptools; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "installing build dependencies: ${need[*]}"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

WORK="$(mktemp -d /tmp/kampx-deb.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
SRC="$WORK/kampx"
git -C "$REPO" archive --format=tar --prefix=kampx/ HEAD | tar -x -C "$WORK"
cp -r "$SRC/packaging/debian" "$SRC/debian"

# the build tools, for the Python that Debian builds with (same minor version: same wheels)
want="$(/usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
have="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
[ "$want" = "$have" ] || { echo "build-deb: $PYTHON is Python $have, Debian builds with $want (set PYTHON=)" >&2; exit 1; }
"$PYTHON" -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
    --target "$SRC/debian/build-deps" "setuptools>=74" "packaging>=24.2" "Cython>=3.1"
# Cython imports pythran when it can; Debian's python3-pythran (pulled in by python3-scipy)
# imports numpy.distutils, which replaces the C compiler setuptools uses and breaks the build.
# kampx has no pythran code: hide it from the build.
printf 'raise ImportError("pythran is not used to build kampx")\n' > "$SRC/debian/build-deps/pythran.py"

started=$(date +%s)
# Debian's own interpreter and tools only: a python3 earlier in PATH (a venv, pyenv) must not
# be the one pybuild builds for
(cd "$SRC" && env PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage -us -uc -b)
echo "dpkg-buildpackage took $(( $(date +%s) - started )) s"
cp "$WORK"/*.deb "$OUT"/
ls -l "$OUT"/*.deb
