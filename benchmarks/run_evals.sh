#!/usr/bin/env bash
# The evaluation runs quoted in the README and model card (validation identities, never trained on).
# Two streams side by side, one thread each: on the 2-core machine this took ~8 min instead of
# ~16 (single-threaded torch runs use a core more efficiently than one two-threaded run).
set -u
R=benchmarks/results/eval
D=${DATA:-../shared/data/celeba}
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
run() { name=$1; shift; out=$(likeness eval --data "$D" --json "$R/$name.json" "$@" 2>&1 | grep -v "it/s\|id/s" | tail -8)
        printf '== %s\n%s\n' "$name" "$out"; }
{
  run student-severe-refs4 --model student --preset severe --refs 4 --limit-identities 50 --grid $R/student-severe-refs4.png
  run teacher-severe-refs4 --model teacher --preset severe --refs 4 --limit-identities 50 --grid $R/teacher-severe-refs4.png
  run teacher1step-severe-refs4 --model teacher --steps 1 --preset severe --refs 4 --limit-identities 50
  run student-severe-refs1 --model student --preset severe --refs 1 --limit-identities 50
  run student-severe-refs8 --model student --preset severe --refs 8 --limit-identities 50
} > "${TMPDIR:-/tmp}/likeness-evals-1.log" &
{
  run student-moderate-refs4 --model student --preset moderate --refs 4 --limit-identities 50
  run student-mild-refs4 --model student --preset mild --refs 4 --limit-identities 50
  # the product's adaptive strength (enhancer/strength.py, fitted on training identities by benchmarks/fit_strength.py)
  for p in mild moderate severe; do
    run student-$p-refs4-adaptive --model student --preset $p --refs 4 --limit-identities 50 --strength adaptive
  done
} > "${TMPDIR:-/tmp}/likeness-evals-2.log" &
wait
cat "${TMPDIR:-/tmp}/likeness-evals-1.log" "${TMPDIR:-/tmp}/likeness-evals-2.log"
