#!/usr/bin/env bash
# Installs, idempotently, the browser the chat page's test drives (test/api/chat-page.test.ts):
# Debian's chromium, headless, through playwright-core (no browser download from elsewhere).
# Like tools/setup-python.sh: apt as root when it is missing, else a message saying what to
# install and a failure (the test is never skipped silently).
set -euo pipefail
[ -x /usr/bin/chromium ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "setup-browser: /usr/bin/chromium is missing (the chat page's browser test needs it); run as root: apt-get install --no-install-recommends chromium" >&2
  exit 1
fi
echo "setup-browser: installing Debian's chromium ..." >&2
export DEBIAN_FRONTEND=noninteractive
apt_get() { apt-get -o DPkg::Lock::Timeout=600 "$@"; }
apt_get update -qq
apt_get install -y -qq --no-install-recommends chromium >/dev/null
