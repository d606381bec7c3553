#!/usr/bin/env bash
# Build and verify on a Raspberry Pi 5 (LiteRT, 4 threads): scripts/build-rpi5.sh [CONFIG] [more edgepipe build options]
# The device comes from targets/devices/rpi5.toml; its host from EDGEPIPE_DEVICE_RPI5 or --device ssh://USER@HOST.
here="$PWD"
source "$(dirname "$0")/_setup.sh"
cd "$here"
exec edgepipe build "${1:-digits-cnn}" --target tflite --device rpi5 "${@:2}"
