#!/usr/bin/env bash
# Installs, idempotently, the Debian packages the deployment tests use: podman (with runc) and
# mmdebstrap for the container image test, nginx, HAProxy and Prometheus (promtool) for the
# load-balanced topology test. Like tools/setup-python.sh: apt as root when something is
# missing, else a message saying what to install. No service is started: the packages' init
# scripts are held back by a policy-rc.d for the length of the install, and the tests run the
# programs themselves, on loopback, with configurations of their own.
#
#   bash tools/deploy/setup-tools.sh            # everything
#   bash tools/deploy/setup-tools.sh image      # podman, runc, mmdebstrap only
#   bash tools/deploy/setup-tools.sh topology   # nginx, haproxy, prometheus only
set -euo pipefail

want=()
need() { command -v "$1" >/dev/null 2>&1 || want+=("$2"); }
what="${1:-all}"
case "$what" in image | topology | all) ;; *) echo "usage: $0 [image|topology|all]" >&2; exit 2 ;; esac
if [ "$what" != topology ]; then need podman podman; need runc runc; need mmdebstrap mmdebstrap; fi
if [ "$what" != image ]; then need nginx nginx-light; need haproxy haproxy; need prometheus prometheus; need promtool prometheus; fi
[ ${#want[@]} -gt 0 ] || exit 0
mapfile -t want < <(printf '%s\n' "${want[@]}" | sort -u)

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "setup-tools: missing ${want[*]}; run as root: apt-get install --no-install-recommends ${want[*]}" >&2
  exit 1
fi
echo "setup-tools: installing ${want[*]} ..." >&2
policy=/usr/sbin/policy-rc.d
held=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && held=1
  trap 'rm -f "$policy"' EXIT
fi
export DEBIAN_FRONTEND=noninteractive
apt_get() { apt-get -o DPkg::Lock::Timeout=600 "$@"; }
apt_get update -qq
apt_get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
[ -z "$held" ] || rm -f "$policy"
