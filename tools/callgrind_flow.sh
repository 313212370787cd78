#!/bin/sh
# Instructions per call of one in-process flow (tools/profile_flow.py scenarios), under
# valgrind's callgrind: deterministic where timings on this shared VM are not, so an A/B of a
# change to the Python side reads clearly. Two runs of different length; their difference
# over the extra calls leaves start-up out. profile_flow.py warms up with as many calls as it
# times when they are fewer than 2000, so the runs of 200 and 700 make 400 and 1400 calls:
# 1000 more. (Before 2026-12-07 this divided by 500: every figure it printed was twice the
# cost of a call; the ratios between two figures were right.)
#   tools/callgrind_flow.sh carrier_call        (apt-get install valgrind)
#   tools/callgrind_flow.sh carrier_call --own  kampx's own work alone, the harness left out
#   tools/callgrind_flow.sh carrier_call --stage kampx.rr:loose_route   one function, inclusive
# (the marks: tools/profile_flow.py --mark-kampx / --mark). PYTHONHASHSEED=0 takes out the
# ~1 % that dict and set layouts move a count from run to run.
set -e
flow=${1:-carrier_call}
mode=${2:-}
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
case "$mode" in
    --own) mark="--mark-kampx"; toggle="--toggle-collect=_operator_call"; what="kampx's own" ;;
    --stage) mark="--mark=$3"; toggle="--toggle-collect=partial_vectorcall"; what="$3, inclusive" ;;
    "") mark=""; toggle=""; what="in-process, harness included" ;;
    *) echo "usage: $0 FLOW [--own | --stage module:Qual.name]" >&2; exit 2 ;;
esac
count() {
    valgrind --tool=callgrind $toggle --callgrind-out-file=/dev/null "$py" tools/profile_flow.py \
        --scenario "$flow" --calls "$1" --time-only $mark 2>&1 | awk '/Collected/ {print $4}'
}
a=$(count 200)
b=$(count 700)
echo "$flow: $(( (b - a) / 1000 )) instructions per call ($what)"
