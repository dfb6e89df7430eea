#!/usr/bin/env bash
# Make this machine ready for `make demo` and `make test`: host packages, a running
# Docker engine (with or without systemd). Safe to run again: it only does what is missing.
set -euo pipefail

apt_packages=(docker.io debootstrap openssh-client openssh-server rsync python3-venv ca-certificates)
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v ssh >/dev/null 2>&1 || missing+=(openssh-client)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v rsync >/dev/null 2>&1 || missing+=(rsync)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
[ -s /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing host packages; run as root or install them first: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup: no apt-get here; install the equivalents of: ${apt_packages[*]}" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

docker_answers() { docker info >/dev/null 2>&1; }

if ! docker_answers; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: the Docker daemon does not answer; start it (sudo systemctl start docker) or add yourself to the docker group" >&2
    exit 1
  fi
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
  if ! docker_answers; then
    echo "setup: dockerd did not come up; see /var/log/dockerd.log" >&2
    exit 1
  fi
fi
echo "setup: host ready (docker $(docker version --format '{{.Server.Version}}'))"
