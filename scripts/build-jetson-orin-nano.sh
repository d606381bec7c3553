#!/usr/bin/env bash
# Build and verify on a Jetson Orin Nano (TensorRT engine built there with build_engine.sh): scripts/build-jetson-orin-nano.sh [CONFIG] [more edgepipe build options]
# The device comes from targets/devices/jetson-orin-nano.toml; its host from EDGEPIPE_DEVICE_JETSON_ORIN_NANO or --device ssh://USER@HOST.
here="$PWD"
source "$(dirname "$0")/_setup.sh"
cd "$here"
exec edgepipe build "${1:-digits-cnn}" --target tensorrt --device jetson-orin-nano "${@:2}"
