#!/usr/bin/env bash
# Installs Mesa 25 (llvmpipe GL + lavapipe Vulkan software adapters) from
# Debian 12's bookworm-backports suite. Stock Mesa 22.3 also works, ~7x slower.
# Run as root on Debian 12 (bookworm).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "deb http://deb.debian.org/debian bookworm-backports main" \
        > /etc/apt/sources.list.d/bookworm-backports.list
fi
apt-get update -qq
apt-get install -y -qq -t bookworm-backports \
    mesa-vulkan-drivers libgl1-mesa-dri libegl-mesa0 libglx-mesa0 libgbm1 libglapi-mesa \
    libegl1 libvulkan1
