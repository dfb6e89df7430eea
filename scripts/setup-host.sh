#!/usr/bin/env bash
# Make this machine ready for the Wyvern workbench. Safe to run again: it only does what
# is missing.
#
#   setup-host.sh          the control node (Python with venv, ssh, rsync): required, so
#                          `make setup` can make .venv. Then the local target (Docker, the
#                          debootstrap base): installed where apt-get and root allow, else
#                          one line saying what `make demo` here would still need. A laptop
#                          that only drives a cloud workbench needs nothing more.
#   setup-host.sh --local  the same, but the local target is required (make demo).
#   setup-host.sh --tests  --local plus the test tools: sshd (the aws end-to-end test's
#                          stand-in instance) and Chromium (the browser tests, driven by
#                          Playwright; never a browser download at run time).
set -euo pipefail

mode=${1:-control}
case "$mode" in
  control | --local | --tests) ;;
  *)
    echo "setup: unknown option $mode; use no option, --local or --tests" >&2
    exit 2
    ;;
esac

have() { command -v "$1" >/dev/null 2>&1; }
is_root() { [ "$(id -u)" -eq 0 ]; }
can_apt() { have apt-get && is_root; }

apt_install() {
  echo "setup: installing $*"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Missing Debian packages, or the fix on a machine where they cannot be installed here.
why_not_apt() {
  if ! have apt-get; then
    echo "this machine has no apt-get; install the equivalents of: $*"
  else
    echo "run as root or install them first: sudo apt-get install -y $*"
  fi
}

# 1. The control node: Ansible runs here, from .venv; it reaches hosts over ssh and rsync.
control=()
python3 -c 'import sys, venv, ensurepip; assert sys.version_info >= (3, 11)' >/dev/null 2>&1 ||
  control+=(python3-venv)
have ssh || control+=(openssh-client)
have rsync || control+=(rsync)
if [ "${#control[@]}" -gt 0 ]; then
  if ! can_apt; then
    echo "setup: the control node needs Python 3.11+ with venv, ssh and rsync; $(why_not_apt "${control[@]}")" >&2
    exit 1
  fi
  apt_install "${control[@]}"
fi
echo "setup: control node ready (python $(python3 -c 'import platform; print(platform.python_version())'), ssh, rsync): enough for a cloud workbench (site.yml -e workbench_target=aws)"

# 2. The local target (workbench_target=local, `make demo`): a Debian host whose Docker
#    answers; the notebook role builds its debootstrap base where no registry answers.
docker_answers() { docker info >/dev/null 2>&1; }

local_pkgs=()
# A Docker client alone (no daemon here, none answering elsewhere) is not enough.
docker_answers || have dockerd || local_pkgs+=(docker.io)
have debootstrap || local_pkgs+=(debootstrap)
[ -s /etc/ssl/certs/ca-certificates.crt ] || local_pkgs+=(ca-certificates)
if [ "$mode" = --tests ]; then
  [ -x /usr/sbin/sshd ] || local_pkgs+=(openssh-server)
  [ -x /usr/bin/chromium ] || local_pkgs+=(chromium)
fi

# The local target cannot be made ready here: say what it lacks. Only --local and --tests
# fail on it; the control node alone is a complete setup for a cloud workbench.
not_ready() {
  if [ "$mode" = control ]; then
    echo "setup: the local target (make demo on this machine) would still need: $1"
    exit 0
  fi
  echo "setup: the local target (make demo on this machine) needs: $1" >&2
  exit 1
}

if ! have apt-get; then
  not_ready "a Debian 12 or Ubuntu 22.04/24.04 host (site.yml's host roles install and check Docker with apt; this machine has no apt-get)${local_pkgs[*]:+ and: ${local_pkgs[*]}}"
fi
if [ "${#local_pkgs[@]}" -gt 0 ]; then
  can_apt || not_ready "${local_pkgs[*]} ($(why_not_apt "${local_pkgs[@]}"))"
  apt_install "${local_pkgs[@]}"
fi

if ! docker_answers; then
  is_root || not_ready "a Docker daemon that answers you; start it (sudo systemctl start docker) or add yourself to the docker group"
  if [ -d /run/systemd/system ]; then
    systemctl start docker
  else
    # No systemd (containers, CI sandboxes): start dockerd in the background.
    nohup dockerd >/var/log/dockerd.log 2>&1 &
  fi
  for _ in $(seq 1 60); do
    docker_answers && break
    sleep 1
  done
  docker_answers || not_ready "a Docker daemon that answers; dockerd did not come up (see /var/log/dockerd.log)"
fi
echo "setup: local target ready (docker $(docker version --format '{{.Server.Version}}'))"

# Disk: the notebook image is about 6.5 GB, and building it keeps its venv stage (as much
# again) as the build cache; the test suite adds its temporary files. Too little space
# shows up later as many unrelated-looking failures, so say it here.
need_gb=14 who="the local target" uses="the notebook image and its build cache"
[ "$mode" = --tests ] && need_gb=30 who="the test suite" uses="$uses, the test venv and test files"
docker_root=$(docker info --format '{{.DockerRootDir}}' 2>/dev/null || echo /var/lib/docker)
free_gb=$(df -P -BG "$docker_root" "${TMPDIR:-/tmp}" 2>/dev/null | awk 'NR > 1 { gsub("G", "", $4); if (min == "" || $4 + 0 < min) min = $4 + 0 } END { print min + 0 }')
if [ "$mode" != control ] && [ "$free_gb" -lt "$need_gb" ]; then
  echo "setup: WARNING: only ${free_gb} GB free under $docker_root or ${TMPDIR:-/tmp}; $who needs about ${need_gb} GB ($uses). Free space first: docker image prune (untagged build stages), old wyvern/notebook tags (docker image ls wyvern/notebook)." >&2
fi
