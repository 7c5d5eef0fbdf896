#!/usr/bin/env bash
# Installs the Debian packages roam's tests and demo need, if missing
# (root; used by .ci/run and scripts/demo.sh).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
need=()
command -v ip >/dev/null || need+=(iproute2)
command -v ping >/dev/null || need+=(iputils-ping)
command -v setpriv >/dev/null || need+=(util-linux)
command -v pgrep >/dev/null || need+=(procps)
command -v python3 >/dev/null || need+=(python3)
# The checkpoint tests build their C programs (static too: libc.a).
command -v cc >/dev/null || need+=(build-essential)
# Foreign-architecture nodes and test programs: qemu-user and Debian's
# cross compilers with their C libraries.
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
for t in aarch64-linux-gnu:arm64 s390x-linux-gnu:s390x arm-linux-gnueabihf:armhf; do
  triplet=${t%%:*} deb=${t##*:}
  command -v "$triplet-gcc" >/dev/null || need+=("gcc-$triplet")
  [ -e "/usr/$triplet/include/stdio.h" ] || need+=("libc6-dev-$deb-cross")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" </dev/null
fi
# The GridRPC tests build a worker for s390x (big-endian) with Rust's
# standard library for that target.
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx s390x-unknown-linux-gnu; then
  echo "installing Rust's s390x-unknown-linux-gnu target" >&2
  rustup target add s390x-unknown-linux-gnu
fi
