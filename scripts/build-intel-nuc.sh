#!/usr/bin/env bash
# Build and verify on an Intel NUC (OpenVINO CPU): scripts/build-intel-nuc.sh [CONFIG] [more edgepipe build options]
# The device comes from targets/devices/intel-nuc.toml; its host from EDGEPIPE_DEVICE_INTEL_NUC or --device ssh://USER@HOST.
here="$PWD"
source "$(dirname "$0")/_setup.sh"
cd "$here"
exec edgepipe build "${1:-digits-cnn}" --target openvino --device intel-nuc "${@:2}"
