#!/usr/bin/env bash
# roam's main demo, on a local cluster of network namespaces: the paper's
# heterogeneous pipe (a foreign program started from the shell runs on a
# node of its architecture), remote processes in a pipe, roam ps, a node
# killed and the cluster carrying on. Needs root (namespaces, binfmt_misc;
# it installs qemu-user-static and cross compilers if missing). Cleans up
# after itself.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "demo: run as root (it builds network namespaces)" >&2
  exit 1
fi
./scripts/deps.sh
cargo build --release --quiet
R=$PWD/target/release
export PATH="$R:$PATH"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '\033[2m$ %s\033[0m\n' "$*"; eval "$@"; }

step "a cluster on this machine: it is the home node; 4 nodes, each a network namespace with its own roamd; n1 and n2 stand for an aarch64 and a big-endian s390x machine (qemu-user)"
out=$(roam testbed up --nodes 4 --arch aarch64,s390x --heartbeat-ms 250 --timeout-ms 1500)
echo "$out"
id=$(echo "$out" | sed -n 's/^testbed \([0-9]*\) is up.*/\1/p')
# Foreign programs, built here; not under /tmp, which each node has its own.
work=$(mktemp -d /var/tmp/roam-demo.XXXXXX)
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  roam binfmt remove >/dev/null 2>&1 || true
  roam testbed down --id "$id" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
aarch64-linux-gnu-gcc -static -O2 -o "$work/pi_aarch64" tests/programs/pi.c
s390x-linux-gnu-gcc -static -O2 -o "$work/sigtest_s390x" tests/programs/sigtest.c
aarch64-linux-gnu-gcc -static -O2 -o "$work/sigtest_aarch64" tests/programs/sigtest.c
cp tests/programs/pi.c "$work/"
# From here on, commands are shown and may fail on purpose (exit statuses).
set +e
export ROAM_SOCKET=$(echo "$out" | sed -n 's/^export ROAM_SOCKET=//p')
show roam nodes

step "the paper's heterogeneous pipe, from a plain shell: binfmt_misc hands foreign programs to roam"
show roam binfmt install
cd "$work"
show file pi_aarch64
show "./pi_aarch64 2000 | tail -c 12; echo \"pi_aarch64 exit status: \${PIPESTATUS[0]}\""
show "./pi_aarch64 1000 | python3 -c 'import sys; print(len(sys.stdin.read().strip()), \"digits through a native pipe\")'"
./sigtest_s390x > sig1.out &
./sigtest_aarch64 > sig2.out &
sleep 1
show roam ps
show "kill -USR1 %1 %2; sleep 0.3; kill -TERM %1 %2; wait %1; s1=\$?; wait %2; echo \"exit statuses \$s1 and \$?\"; cat sig1.out sig2.out"
cd - >/dev/null

step "the paper's pipe: pi digits computed on a node, piped into tail on the home node"
show "roam run python3 scripts/pi.py 2000 | tail -c 12"
show "roam run seq 1 5 | roam run tr 1-5 a-e | tr '\n' ' '; echo"

step "remote processes look local: ps shows the proxies under the programs' names"
for i in 1 2 3; do roam run sleep 300 & done
sleep 1
show roam ps
show "ps -o pid,stat,args -C sleep"

step "exit statuses and signals carry over"
show "roam run sh -c 'exit 3'; echo \"exit status: \$?\""
victim=$(roam ps --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["home_pid"])')
show "kill -TERM $victim; wait $victim 2>/dev/null; echo \"killed by TERM: status \$?\""

step "a node dies: its processes' proxies end with a clear message, the rest carries on"
show roam testbed kill --id "$id" n3
sleep 2.5
show roam nodes
show roam ps
show "roam run echo still running on \$(roam nodes --json | python3 -c 'import json,sys; print(len([n for n in json.load(sys.stdin) if n[\"state\"]==\"Up\"]))') nodes"

step "the node comes back and takes new work"
show roam testbed start --id "$id" n3
sleep 1.5
show roam nodes
show "roam run --node n3 echo hello from n3"

step "done: tearing the cluster down"
kill $(jobs -p) 2>/dev/null || true
wait 2>/dev/null || true
