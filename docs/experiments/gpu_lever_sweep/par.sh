#!/bin/bash
# Each config's 7 folds as 7 processes at once on the one GPU; configs in turn until the budget.
end=$((SECONDS + $1)); shift
for cfg in "$@"; do
  [ $SECONDS -lt $end ] || { echo "budget spent before $cfg"; break; }
  for held in 10kD2 10kD3 20kD1 20kD2 40kD1 40kD2 40kD3; do HELD=$held python3 sweep.py 1e9 "$cfg" 2>>"$OUT/errors.txt" & done
  wait; echo "$cfg done at $SECONDS s"
done
