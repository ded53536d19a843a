#!/usr/bin/env bash
# The cluster under a CPU quota per process, as pods with a CPU limit run it, with and without
# the garbage-collector flags the operator sets for that limit (services/control/gc-threads.ts).
#
# Each run starts a cluster target (`cli.js cluster --targets cluster`), puts each gateway and
# broadcast process in a cgroup of its own with QUOTA CPUs (v1 cpu.cfs_quota_us or v2 cpu.max), and
# measures one fixed-rate step. Runs alternate between FLAGS and no flags, PAIRS times, and the
# script prints each run's p99 and in how many pairs FLAGS had the lower one. Needs root and a
# writable cgroup cpu controller; cgroups it makes are removed after each run.
#
#   RATE=4000 QUOTA=0.5 PAIRS=3 FLAGS=--single-threaded-gc bash load-tests/gc-quota.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RATE="${RATE:-4000}" QUOTA="${QUOTA:-0.5}" PAIRS="${PAIRS:-3}" FLAGS="${FLAGS:---single-threaded-gc}"
quota_us=$(awk -v q="$QUOTA" 'BEGIN { printf "%d", q * 100000 }')
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then v2=1; root=/sys/fs/cgroup; else v2=0; root=/sys/fs/cgroup/cpu; fi
out=$(mktemp -d)
trap 'rm -rf "$out"; for d in "$root"/sb-gcq-*; do [ -d "$d" ] && rmdir "$d" 2>/dev/null; done; true' EXIT

run() { # $1 flags, $2 output file
  LOADTEST_SERVER_NODE_ARGS="$1" node dist/load-tests/cli.js cluster --targets cluster --rate "$RATE" \
    --warmup 3 --duration 8 --out "$2" >/dev/null 2>&1 &
  local cli=$! pids="" n=0
  for _ in $(seq 1 100); do # the roles start within seconds; poll, bounded
    pids=$(pgrep -f "services/cli.js (gateway|broadcast)" || true)
    [ "$(echo "$pids" | wc -w)" -ge 3 ] && break
    sleep 0.2
  done
  for p in $pids; do
    n=$((n + 1)); d="$root/sb-gcq-$n"; mkdir -p "$d"
    if [ "$v2" = 1 ]; then echo "$quota_us 100000" >"$d/cpu.max"; echo "$p" >"$d/cgroup.procs"
    else echo "$quota_us" >"$d/cpu.cfs_quota_us"; for t in /proc/"$p"/task/*; do echo "${t##*/}" >"$d/tasks" 2>/dev/null || true; done; fi
  done
  wait "$cli"
  for d in "$root"/sb-gcq-*; do rmdir "$d" 2>/dev/null || true; done
  node -e 'const m = require(process.argv[1]).runs[0].metrics; console.log(m.p99_ms)' "$2"
}

lower=0
for i in $(seq 1 "$PAIRS"); do
  a=$(run "$FLAGS" "$out/a$i.json"); b=$(run "" "$out/b$i.json")
  echo "pair $i: p99 $a ms with '$FLAGS', $b ms without"
  awk -v a="$a" -v b="$b" 'BEGIN { exit !(a < b) }' && lower=$((lower + 1))
done
echo "rate $RATE/s, quota $QUOTA CPU per process: '$FLAGS' had the lower p99 in $lower of $PAIRS pairs"
