#!/usr/bin/env bash
# Debian packages the test suite drives kampx with (SIPp, sipsak, sipvicious, PostgreSQL) and
# the tools the operator sections mention. Installs only what is missing; needs root or sudo.
set -euo pipefail
need=()
command -v sipp >/dev/null 2>&1 || need+=(sip-tester)
command -v sipsak >/dev/null 2>&1 || need+=(sipsak)
command -v svwar >/dev/null 2>&1 || need+=(sipvicious)
command -v sqlite3 >/dev/null 2>&1 || need+=(sqlite3)
# the TLS tests make their CA and certificates with the openssl command
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# the cluster tests start their own PostgreSQL server (initdb + pg_ctl, no system cluster)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
command -v gcc >/dev/null 2>&1 || need+=(build-essential)
# building the Debian package (tests/ops checks it builds)
command -v dpkg-buildpackage >/dev/null 2>&1 || need+=(dpkg-dev)
dpkg -s debhelper dh-python pybuild-plugin-pyproject >/dev/null 2>&1 || need+=(debhelper dh-python pybuild-plugin-pyproject)
[ ${#need[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing Debian packages: ${need[*]}"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
