#!/usr/bin/env bash
# Installs the Debian packages Navigator and its tests use, only those missing, then the npm
# dependencies. Safe to run again. Needs root (or sudo) for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  openssh-server openssh-client   # image shipping (SFTP) and its tests
  iproute2 iputils-arping         # service address move, network-namespace lab
  mariadb-server mariadb-client   # database sync, demo service, tests (private mariadbd per test)
  qemu-system-x86                 # qemu container driver and its test
  qemu-utils e2fsprogs util-linux # the VM example's guest image (qemu-img, mkfs.ext4 -d, unshare)
  chromium                        # tracking page browser test
  keepalived                      # failover benchmark yardstick
  zabbix-server-mysql zabbix-agent  # the Zabbix example service and its lab test (zabbix_sender too)
  zabbix-frontend-php php-cli php-mysql  # the Zabbix template's import test (the frontend's API, served by php -S)
  procps psmisc curl              # ps, pkill, fuser, curl for tests and the demo
  debootstrap systemd-container   # the package tests: Debian machines booted under systemd-nspawn
)

missing=()
for p in "${PACKAGES[@]}"; do
  case "$p" in \#*) continue ;; esac
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
  # Debian starts services on install; the tests and the demo run their own private instances.
  $SUDO systemctl disable --now keepalived 2>/dev/null || true
  $SUDO systemctl disable --now zabbix-server zabbix-agent 2>/dev/null || true
else
  echo "setup: Debian packages present"
fi

# QEMU's bridge helper joins a guest's tap to a host bridge only if /etc/qemu/bridge.conf allows
# that bridge: the VM tests and bench:vm put their guests on bridges named navbr0.
if ! grep -qsx 'allow navbr0' /etc/qemu/bridge.conf; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO mkdir -p /etc/qemu
  echo 'allow navbr0' | $SUDO tee -a /etc/qemu/bridge.conf >/dev/null
fi

# Exactly the locked versions, into a fresh node_modules (the lock file records every platform's
# optional packages, so `npm ci` accepts it on any machine).
npm ci --no-audit --no-fund
# ssh2's native ciphers, built for the pinned Node 22 (npm built them for the system Node).
bash scripts/ssh2-native.sh
