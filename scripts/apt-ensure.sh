#!/usr/bin/env bash
# Install a Debian package when its command is missing: apt-ensure.sh COMMAND PACKAGE.
set -euo pipefail
command -v "$1" >/dev/null && exit 0
[ -x "/usr/sbin/$1" ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "$1 is missing: install it with 'apt-get install $2'"; exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
