#!/usr/bin/env bash
# Install the system packages that the test suite needs (Debian, run as root). Idempotent: each
# package is installed only when its command is missing, so a second run does nothing.
set -euo pipefail

APT_UPDATED=0
apt_install() {
  if [ "$APT_UPDATED" = 0 ]; then
    apt-get update
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
}

# Headless browser for tests/pipeline/report/test_html.py (renders report.html).
command -v chromium >/dev/null 2>&1 || apt_install chromium

# --- Other system test dependencies go here (one `command -v X || apt_install PKG` line each) ---
# e.g. command -v sshd >/dev/null 2>&1 || apt_install openssh-server
#      command -v pg_ctlcluster >/dev/null 2>&1 || apt_install postgresql
# --- openssh: tests/targets/test_ssh.py starts a throw-away sshd on 127.0.0.1 and uses the real ssh client ---
[ -x /usr/sbin/sshd ] || apt_install openssh-server
command -v ssh >/dev/null 2>&1 && command -v ssh-keygen >/dev/null 2>&1 \
  || apt_install openssh-client
# --- end of openssh ---
# --- postgresql: tests/pipeline/search/test_search.py runs a throw-away server (initdb/pg_ctl as user postgres) ---
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt_install postgresql
# --- end of postgresql ---
# --- qemu-user: tests/targets/test_qdq_as_written.py runs the runner on an emulated AVX2-only CPU (-cpu Haswell) ---
command -v qemu-x86_64-static >/dev/null 2>&1 || apt_install qemu-user-static
# --- end of qemu-user ---
# --- emulated aarch64 devices: tests/targets/emulate/ and tests/pipeline/test_devices.py build them with
# `edgepipe device emulate` (an arm64 Debian root with mmdebstrap, run under qemu-aarch64) ---
command -v mmdebstrap >/dev/null 2>&1 || apt_install mmdebstrap
# QEMU >= 10: Debian 12's qemu 7.2 crashes LiteRT 2.x and gives chance-level int8 results with SVE/SME CPU
# models. Debian 13 (trixie)'s qemu-user is a static binary that runs on Debian 12: fetch it with a private
# apt state (the system's sources stay as they are) and install its qemu-aarch64 only.
QEMU_MAJOR=$(qemu-aarch64 --version 2>/dev/null | sed -n 's/.*version \([0-9][0-9]*\)\..*/\1/p' | head -n1 || true)
if [ "${QEMU_MAJOR:-0}" -lt 10 ]; then
  QEMU_TMP=$(mktemp -d)
  mkdir -p "$QEMU_TMP/lists/partial"
  echo "deb http://deb.debian.org/debian trixie main" > "$QEMU_TMP/sources.list"
  APT_PRIVATE=(-o "Dir::Etc::SourceList=$QEMU_TMP/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
               -o "Dir::State::Lists=$QEMU_TMP/lists" -o "Dir::Cache=$QEMU_TMP/cache" -o "APT::Sandbox::User=root")
  apt-get "${APT_PRIVATE[@]}" update
  (cd "$QEMU_TMP" && apt-get "${APT_PRIVATE[@]}" download qemu-user)
  dpkg-deb -x "$QEMU_TMP"/qemu-user_*.deb "$QEMU_TMP/x"
  install -m 0755 "$QEMU_TMP/x/usr/bin/qemu-aarch64" /usr/local/bin/qemu-aarch64
  rm -rf "$QEMU_TMP"
fi
# --- end of emulated aarch64 devices ---
# --- end of other system test dependencies ---
