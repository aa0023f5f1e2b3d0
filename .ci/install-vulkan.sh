#!/usr/bin/env bash
# Installs Mesa >= 25 lavapipe (software Vulkan) from bookworm-backports and the Vulkan loader.
# Bookworm's own Mesa 22.3.6 computed a tiled attention kernel wrong; do not use it.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  echo 'deb http://deb.debian.org/debian bookworm-backports main' > /etc/apt/sources.list.d/backports.list
fi
apt-get update -qq
apt-get install -y -qq -t bookworm-backports mesa-vulkan-drivers libvulkan1 >/dev/null
apt-get install -y -qq vulkan-tools >/dev/null || true
dpkg -l mesa-vulkan-drivers | tail -1
