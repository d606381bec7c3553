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

# Headless browser for tests/pipeline/test_html_report.py (renders report.html).
command -v chromium >/dev/null 2>&1 || apt_install chromium

# --- Other system test dependencies go here (one `command -v X || apt_install PKG` line each) ---
# e.g. command -v sshd >/dev/null 2>&1 || apt_install openssh-server
#      command -v pg_ctlcluster >/dev/null 2>&1 || apt_install postgresql
# --- openssh: tests/targets/test_ssh.py starts a throw-away sshd on 127.0.0.1 and uses the real ssh client ---
[ -x /usr/sbin/sshd ] || apt_install openssh-server
command -v ssh >/dev/null 2>&1 && command -v ssh-keygen >/dev/null 2>&1 \
  || apt_install openssh-client
# --- end of openssh ---
# --- postgresql: tests/pipeline/test_search.py runs a throw-away server (initdb/pg_ctl as user postgres) ---
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt_install postgresql
# --- end of postgresql ---
# --- qemu-user: tests/targets/test_qdq_as_written.py runs the runner on an emulated AVX2-only CPU (-cpu Haswell) ---
command -v qemu-x86_64-static >/dev/null 2>&1 || apt_install qemu-user-static
# --- end of qemu-user ---
# --- end of other system test dependencies ---
