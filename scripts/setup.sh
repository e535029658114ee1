#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: Debian packages the data engine and browser tests use,
# then a virtual environment with the CPU build of torch and omniground itself. Re-running is cheap:
# each step is skipped when already done for the current pyproject.toml / package list.
set -euo pipefail
cd "$(dirname "$0")/.."

# 1. Debian packages (assets for the data generator, codecs, headless browser).
mapfile -t pkgs < <(grep -v '^\s*#' scripts/system-packages.txt | awk 'NF {print $1}')
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null; then
    echo "setup: missing Debian packages (install them as root): ${missing[*]}" >&2; exit 2
  fi
  SUDO=$([ "$(id -u)" -eq 0 ] && echo "" || echo sudo)
  echo "setup: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. Python environment. torch is pinned to the CPU build that lies on local disk; it goes first so
#    that nothing else can pull a multi-GB CUDA build.
stamp=.venv/.omniground-installed
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q torch==2.13.0
  .venv/bin/python -m pip install -q -e '.[dev]'
  echo "$want" > "$stamp"
fi
