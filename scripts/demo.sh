#!/usr/bin/env bash
# roam's main demo, on a local cluster of network namespaces:
# remote processes in a pipe, roam ps, a node killed and the cluster
# carrying on. Needs root (namespaces). Cleans up after itself.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "demo: run as root (it builds network namespaces)" >&2
  exit 1
fi
cargo build --release --quiet
R=$PWD/target/release
export PATH="$R:$PATH"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '\033[2m$ %s\033[0m\n' "$*"; eval "$@"; }

step "a cluster on this machine: it is the home node; 3 nodes, each a network namespace with its own roamd"
out=$(roam testbed up --nodes 3 --heartbeat-ms 250 --timeout-ms 1500)
echo "$out"
id=$(echo "$out" | sed -n 's/^testbed \([0-9]*\) is up.*/\1/p')
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  roam testbed down --id "$id" >/dev/null 2>&1 || true
}
trap cleanup EXIT
# From here on, commands are shown and may fail on purpose (exit statuses).
set +e
export ROAM_SOCKET=$(echo "$out" | sed -n 's/^export ROAM_SOCKET=//p')
show roam nodes

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
show roam testbed kill n2
sleep 2.5
show roam nodes
show roam ps
show "roam run echo still running on \$(roam nodes --json | python3 -c 'import json,sys; print(len([n for n in json.load(sys.stdin) if n[\"state\"]==\"Up\"]))') nodes"

step "the node comes back and takes new work"
show roam testbed start n2
sleep 1.5
show roam nodes
show "roam run --node n2 echo hello from n2"

step "done: tearing the cluster down"
kill $(jobs -p) 2>/dev/null || true
wait 2>/dev/null || true
