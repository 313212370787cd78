#!/bin/sh
# Instructions per call of one in-process flow (tools/profile_flow.py scenarios), under
# valgrind's callgrind: deterministic where timings on this shared VM are not, so an A/B of a
# change to the Python side reads clearly. Two runs of different length; their difference
# over the extra calls leaves start-up out. profile_flow.py warms up with as many calls as it
# times when they are fewer than 2000, so the runs of 200 and 700 make 400 and 1400 calls:
# 1000 more. (Before 2026-12-07 this divided by 500: every figure it printed was twice the
# cost of a call; the ratios between two figures were right.)
#   tools/callgrind_flow.sh carrier_call        (apt-get install valgrind)
set -e
flow=${1:-carrier_call}
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
count() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$py" tools/profile_flow.py \
        --scenario "$flow" --calls "$1" --time-only 2>&1 | awk '/Collected/ {print $4}'
}
a=$(count 200)
b=$(count 700)
echo "$flow: $(( (b - a) / 1000 )) instructions per call (in-process, harness included)"
