#!/usr/bin/env bash
# Installs the real tools that the collector/Prometheus/dashboard tests run. Idempotent, no prompts, and quick when
# everything is present already:
#   - Debian package `prometheus` (prometheus + promtool; 2.42 on bookworm), without Recommends;
#   - Node.js and npm from Debian, only when `node`/`npm` are missing;
#   - npm packages @grafana/schema (the Grafana image's version) and typescript, into .tools/ (gitignored).
# Runs as root, or as a user with password-less sudo. Called from scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

GRAFANA_SCHEMA_VERSION=11.3.1 # = the grafana/grafana image tag in docker-compose.yml
TYPESCRIPT_VERSION=5.6.3
TOOLS_DIR=.tools

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo -n "$@"
  else
    echo "install-test-tools: root (or sudo) is needed to run: $*" >&2
    return 1
  fi
}

APT_UPDATED=0
apt_update() {
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  APT_UPDATED=1
}

# apt_install PKG...: `apt-get update` first only when the package lists do not know a package yet, and once more
# (then retry) when an install from stale lists fails.
apt_install() {
  local pkg
  for pkg in "$@"; do
    if [ "$APT_UPDATED" -eq 0 ] && ! apt-cache show --no-all-versions "$pkg" >/dev/null 2>&1; then
      apt_update
    fi
  done
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null; then
    [ "$APT_UPDATED" -eq 0 ] || return 1
    apt_update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  fi
}

# --- Prometheus and promtool -------------------------------------------------------------------------------------
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  echo "install-test-tools: installing Debian package prometheus"
  apt_install prometheus
fi

# --- Node.js + npm -----------------------------------------------------------------------------------------------
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "install-test-tools: installing Debian packages nodejs npm"
  apt_install nodejs npm
fi

# --- @grafana/schema + typescript in .tools/ ---------------------------------------------------------------------
installed_version() { # installed_version PACKAGE: its version in .tools/node_modules, or nothing
  node -e 'try { process.stdout.write(require(process.argv[1]).version) } catch (e) {}' \
    "$PWD/$TOOLS_DIR/node_modules/$1/package.json"
}
if [ "$(installed_version @grafana/schema)" != "$GRAFANA_SCHEMA_VERSION" ] ||
  [ "$(installed_version typescript)" != "$TYPESCRIPT_VERSION" ]; then
  echo "install-test-tools: installing @grafana/schema@$GRAFANA_SCHEMA_VERSION typescript@$TYPESCRIPT_VERSION into $TOOLS_DIR/"
  mkdir -p "$TOOLS_DIR"
  [ -f "$TOOLS_DIR/package.json" ] || printf '{\n  "private": true\n}\n' >"$TOOLS_DIR/package.json"
  npm install --prefix "$TOOLS_DIR" --no-audit --no-fund --save-exact --loglevel=error \
    "@grafana/schema@$GRAFANA_SCHEMA_VERSION" "typescript@$TYPESCRIPT_VERSION"
fi

echo "install-test-tools: $(promtool --version 2>&1 | head -n 1)"
echo "install-test-tools: @grafana/schema $(installed_version @grafana/schema), typescript $(installed_version typescript)"
