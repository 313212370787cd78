#!/bin/sh
# Where a running proxy's workers spend their CPU, kernel against user space, and in the
# kernel which system calls: perf's cpu-clock sampling (a software event: it works in a VM
# without hardware counters) over the processes whose command line matches PATTERN, for
# SECONDS. Run it beside a fixed-rate load and divide by the calls of the window:
#   tools/perf_split.sh 'kampx: udp receiver' 8        (apt-get install linux-perf)
#   tools/perf_split.sh 'kamailio -f' 8                the reference (all its processes)
# It prints the CPU time sampled, the share of each binary (the kernel, libpython, each
# compiled module) and the kernel's entry points (system calls, the scheduler).
set -e
pattern=${1:?usage: $0 PATTERN [SECONDS]}
seconds=${2:-8}
# anchored: the processes' titles begin with it, this script's own command line does not
pids=$(pgrep -f "^$pattern" | tr '\n' ',' | sed 's/,$//')
[ -n "$pids" ] || { echo "no process matches '$pattern'" >&2; exit 1; }
out=$(mktemp /tmp/perf_split.XXXXXX)
trap 'rm -f "$out" "$out.old"' EXIT
perf record -q -e cpu-clock -F 2000 -g -p "$pids" -o "$out" -- sleep "$seconds" >/dev/null 2>&1
set +e  # a grep that finds nothing is not a failure
perf report -i "$out" --stdio 2>/dev/null \
    | awk '/^# Event count/ {printf "CPU sampled: %.3f s (divide by the window'"'"'s calls)\n", $5 / 1e9}'
echo "-- by binary"
perf report -i "$out" --no-children --sort dso --stdio -g none 2>/dev/null | grep '%' | head -12
echo "-- kernel entry points (inclusive)"
perf report -i "$out" --children --sort sym --stdio -g none 2>/dev/null \
    | grep '\[k\] __x64_sys_\|\[k\] __schedule$\|\[k\] irqentry_exit' | head -12
