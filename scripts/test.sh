#!/usr/bin/env bash
# Runs roam's whole test suite: unit tests, the integration tests of each
# crate and the end-to-end tests on the netns testbed. Needs root (the
# testbed builds network and mount namespaces); cleans up after itself.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "test.sh: run as root (the end-to-end tests build network namespaces)" >&2
  exit 1
fi
cargo build --workspace --all-targets
cargo test --workspace
