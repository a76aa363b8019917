#!/usr/bin/env sh
# Install Debian's chromium package for the report's headless-browser test (make test calls this).
# Quiet when chromium is already there; never fails the build: the test skips with a clear message instead.
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 && exit 0
command -v apt-get >/dev/null 2>&1 || { echo "install-chromium: no apt-get here; the browser test will skip"; exit 0; }
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
  echo "install-chromium: not root and no sudo; the browser test will skip"; exit 0; fi
echo "install-chromium: installing Debian's chromium package (once)"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 || \
  { $SUDO apt-get update -qq >/dev/null 2>&1 && \
    $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1; } || \
  echo "install-chromium: could not install chromium; the browser test will skip"
exit 0
