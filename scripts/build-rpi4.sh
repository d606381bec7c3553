#!/usr/bin/env bash
# Build and verify on a Raspberry Pi 4 (LiteRT, 4 threads): scripts/build-rpi4.sh [CONFIG] [more edgepipe build options]
# The device comes from targets/devices/rpi4.toml; its host from EDGEPIPE_DEVICE_RPI4 or --device ssh://USER@HOST.
here="$PWD"
source "$(dirname "$0")/_setup.sh"
cd "$here"
exec edgepipe build "${1:-digits-cnn}" --target tflite --device rpi4 "${@:2}"
