#!/usr/bin/env bash
# System packages the tests need: headless Chromium for the report's browser test
# (Debian's `chromium`). Installed only when missing; safe to run repeatedly.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
    || [ -n "${M3EL_CHROMIUM:-}" ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "chromium is missing and this user cannot install it: run, as root," >&2
    echo "  apt-get update && apt-get install -y chromium   (or set M3EL_CHROMIUM)" >&2
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "chromium is missing and apt-get is not available: install Chromium and set" >&2
  echo "M3EL_CHROMIUM to its binary for the browser test." >&2
  exit 1
fi
echo "Installing chromium (for the browser test)..." >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
