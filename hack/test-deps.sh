#!/usr/bin/env bash
# Installs what the tests need and a fresh machine lacks: OpenSSH's server
# and client (the Git-over-SSH tests), gpg (signed commits), Debian's
# Chromium (the web UI's browser tests) with axe-core from npm (their
# accessibility check), and apt and dpkg (the image's). Run by `make test` before any test;
# as root it installs through apt, otherwise it names the command to run and
# fails, so that no test is skipped for want of a tool.
set -euo pipefail

missing=()
need() { # need COMMAND-OR-PATH PACKAGE
	case "$1" in
	/*) [ -x "$1" ] ;;
	*) command -v "$1" >/dev/null 2>&1 ;;
	esac || missing+=("$2")
}
need git git
need gcc gcc
need /usr/sbin/sshd openssh-server
need ssh openssh-client
need ssh-keygen openssh-client
need gpg gnupg
# The image's test fetches and unpacks Debian's packages (internal/image).
need apt-get apt
need dpkg-deb dpkg
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
	missing+=(chromium)
fi
# axe-core (the browser tests' accessibility check) comes from npm.
need npm npm

# axe_core installs axe-core for the tests only, in the cache (the UI itself
# needs no Node build).
axe_dir="${CONVERGE_AXE_DIR:-$HOME/.cache/converge/axe-core}"
axe_core() {
	[ -f "$axe_dir/node_modules/axe-core/axe.min.js" ] && return 0
	echo "make test: installing axe-core $AXE_VERSION with npm into $axe_dir" >&2
	mkdir -p "$axe_dir"
	npm install --prefix "$axe_dir" "axe-core@$AXE_VERSION" --no-audit --no-fund --silent >&2
}
AXE_VERSION=4.14.1

if [ ${#missing[@]} -eq 0 ]; then
	axe_core
	exit 0
fi

# One package may be named twice (ssh and ssh-keygen).
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
	echo "make test needs: ${missing[*]}" >&2
	echo "install them, for example: sudo apt-get install -y ${missing[*]}" >&2
	exit 1
fi

echo "make test: installing ${missing[*]} with apt-get (once per machine; a minute or two)" >&2
log=$(mktemp)
# Install only: no service is started (policy-rc.d refuses it).
own_policy=
if [ ! -e /usr/sbin/policy-rc.d ]; then
	printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
	own_policy=1
fi
trap '[ -z "$own_policy" ] || rm -f /usr/sbin/policy-rc.d; rm -f "$log"' EXIT
if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } >"$log" 2>&1; then
	tail -n 40 "$log" >&2
	echo "make test: installing ${missing[*]} failed (apt-get's last lines above)" >&2
	exit 1
fi
echo "make test: installed ${missing[*]}" >&2
axe_core
