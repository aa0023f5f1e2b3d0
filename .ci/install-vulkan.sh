#!/usr/bin/env bash
# Installs Mesa >= 25 lavapipe (software Vulkan) from bookworm-backports and the Vulkan loader.
# Bookworm's own Mesa 22.3.6 computed a tiled attention kernel wrong; do not use it.
# The backports source is derived from the Debian mirror this machine is already configured
# with (no mirror is named here).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  # the first Debian archive URI (not the security archive) configured, deb822 or one-line style
  uri=$(grep -hs -E '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v -- '-security' |
    head -1 || true)
  if [ -z "$uri" ]; then
    uri=$(grep -hs -E '^deb .* bookworm( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
      awk '{print $2}' | grep -v -- '-security' | head -1 || true)
  fi
  if [ -z "$uri" ]; then
    echo "no Debian source configured in /etc/apt; cannot add bookworm-backports" >&2
    exit 1
  fi
  echo "deb $uri bookworm-backports main" > /etc/apt/sources.list.d/backports.list
fi
apt-get update -qq
apt-get install -y -qq -t bookworm-backports mesa-vulkan-drivers libvulkan1 >/dev/null
apt-get install -y -qq vulkan-tools >/dev/null || true
dpkg -l mesa-vulkan-drivers | tail -1
