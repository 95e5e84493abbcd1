#!/usr/bin/env bash
# Debian packages the tests and benchmarks use: real brokers and servers, never mocks.
# Installs only what is missing, so it is cheap on a machine that already has them. kubectl (with
# Kustomize v5) comes with the machine's Google Cloud CLI: Debian's kubernetes-client 1.20 is too old.
set -euo pipefail
need=()
command -v prometheus >/dev/null 2>&1 || [ -x /usr/bin/prometheus ] || need+=(prometheus)
command -v rabbitmq-server >/dev/null 2>&1 || [ -x /usr/sbin/rabbitmq-server ] || need+=(rabbitmq-server)
command -v h2load >/dev/null 2>&1 || need+=(nghttp2-client)
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || need+=(redis-server)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# bench/grpc_instructions.py counts instructions per call with callgrind (`make bench` only).
command -v callgrind_control >/dev/null 2>&1 || need+=(valgrind)
# tests/test_image.py builds the Dockerfile and runs the image: podman (daemonless) with runc, on a
# Python base bootstrapped from Debian's archive.
command -v podman >/dev/null 2>&1 || need+=(podman)
command -v runc >/dev/null 2>&1 || [ -x /usr/sbin/runc ] || need+=(runc)
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
# tests/test_status_browser.py drives Debian's chromium with Playwright (no browser download).
[ -x /usr/bin/chromium ] || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
