"""Emulated aarch64 devices: a Debian arm64 root, aarch64 wheels of numpy and a LiteRT runtime, QEMU >= 10,
and an SSH daemon on loopback, so that `--device NAME` runs the device runner on ARM kernels without a board.

Each module has one job: spec (what a device is), qemu (find or fetch QEMU), rootfs (the arm64 root), wheels
(the runtime), sshd (the loopback daemon), registry (build, list, remove, connect)."""
