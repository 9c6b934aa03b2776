#!/usr/bin/env bash
# Installs headless Chromium and its driver (Debian packages) for the report's browser test.
# Safe to run repeatedly; prints why when it cannot install (the browser test then skips with that reason).
set -u
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "setup-test-browser: need root and apt-get to install chromium + chromium-driver; the browser test will skip." >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null && apt-get install -y -qq chromium chromium-driver >/dev/null \
  || echo "setup-test-browser: apt-get could not install chromium; the browser test will skip." >&2
exit 0
