#!/usr/bin/env bash
# Build and verify on this machine (every target, no SSH): scripts/build-host.sh [CONFIG] [more edgepipe build options]
# The device comes from targets/devices/host.toml.
here="$PWD"
source "$(dirname "$0")/_setup.sh"
cd "$here"
exec edgepipe build "${1:-digits-cnn}" --device host "${@:2}"
