#!/usr/bin/env bash
# Headless Chromium for the report's browser test: Debian's chromium package, installed when missing and apt-get
# can run; otherwise one line, and the browser test is skipped.
set -eu
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing the Debian package chromium (for the report's browser test) ..."
  (apt-get install -y -qq chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)) \
    && exit 0
fi
echo "chromium not found and not installable here: the report's browser test will be skipped" >&2
exit 0
