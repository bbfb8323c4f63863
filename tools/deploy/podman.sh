#!/usr/bin/env bash
# podman as it works on the project's machines (Debian's podman 4.3 inside a VM): runc instead
# of crun (crun fails on setrlimit and on hybrid cgroups there), the cgroupfs manager, no default
# ulimits, host networking for builds and runs. Everything after the script's name goes to
# podman, e.g. `bash tools/deploy/podman.sh images`. A real Docker or podman host needs none
# of this: use `docker build` / `docker run` as docs/deployment.md shows.
set -euo pipefail
conf="${TMPDIR:-/tmp}/tinyllava-containers.conf"
[ -f "$conf" ] || printf '[containers]\ndefault_ulimits = []\n' > "$conf"
export CONTAINERS_CONF="$conf"
exec podman --runtime runc --cgroup-manager cgroupfs "$@"
