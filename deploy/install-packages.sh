#!/usr/bin/env bash
# Installs Debian packages that are missing. Each argument is WHAT:PACKAGE,
# WHAT a command or an absolute path the package installs; the package is
# installed only when it is not found, so running this again changes
# nothing.
set -euo pipefail
missing=()
for pair in "$@"; do
  what=${pair%%:*}
  if [[ $what == /* ]]; then
    [[ -e $what ]] || missing+=("${pair#*:}")
  else
    command -v "$what" >/dev/null 2>&1 || missing+=("${pair#*:}")
  fi
done
((${#missing[@]})) || exit 0
if [[ $(id -u) -ne 0 ]]; then
  echo "install-packages: need root to install: ${missing[*]}" >&2
  exit 1
fi
echo "installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
