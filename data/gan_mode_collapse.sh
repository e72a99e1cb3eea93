#!/usr/bin/env bash
# Chapter 4's mode-collapse table: every run is `python -m dgm train gan` (the CLI's code path),
# one line of JSON per run appended to data/gan_mode_collapse.jsonl with the variant's name and the
# run's settings added.
#
#   bash data/gan_mode_collapse.sh                      # all data sets, variants and seeds
#   SEEDS="0 1" DATASETS=ring-sharp VARIANT_NAMES="plain GAN" bash data/gan_mode_collapse.sh
#
# One budget for every row: the CLI's default training (its steps, width 128, learning rate 2e-3
# falling along a half cosine to 0 over the run, the best checkpoint by the validation Parzen score
# every 500 steps, GAN.validation_score). Only the remedies differ. The plain GAN switches every
# remedy of the default off; each of the next rows switches one remedy on (or changes G's loss);
# "earlier default" is the default before issue 19 (no packing; ring-sharp only, since on grid-sharp
# it is today's); the last row is the CLI's default itself. Comparison rows: seeds 0..2; the default:
# seeds 0..9. Variants run in the order below (both data sets each), so a partial run has the first
# rows complete.
# Runs one at a time with OMP_NUM_THREADS=1 (single-thread CPU seconds); JOBS=2 runs two at once.
# A failed run stops the script (set -e, pipefail), and the lines of the runs before it stay in OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-data/gan_mode_collapse.jsonl}
DATASETS=${DATASETS:-"ring-sharp grid-sharp"}
PYTHON=${PYTHON:-python}
JOBS=${JOBS:-1}
DEFAULT_NAME="default"
# every remedy of the default off; a variant's row keeps the default's value of what it does not set
# (the R1 weight and whether it fades, per data set: src/dgm/registry.py, _gan_points_config)
PLAIN="pack=1 latent_components=0 r1=0 ema=0"
declare -A VARIANTS=(
  ["plain GAN"]="$PLAIN"
  ["feature matching"]="$PLAIN loss=feature_matching"
  ["denoising feature matching"]="$PLAIN loss=denoising"
  ["packing (PacGAN2)"]="pack=2 latent_components=0 r1=0 ema=0"
  ["latent mixture"]="pack=1 r1=0 ema=0"
  ["R1 penalty"]="pack=1 latent_components=0 ema=0"
  ["weight average"]="pack=1 latent_components=0 r1=0"
  ["earlier default (no packing)"]="pack=1"
  ["$DEFAULT_NAME"]=""
)
declare -A DEFAULT_SEEDS=(["$DEFAULT_NAME"]="0 1 2 3 4 5 6 7 8 9")
# the default before issue 19 differs from today's on ring-sharp only (grid-sharp does not pack)
declare -A ONLY_ON=(["earlier default (no packing)"]="ring-sharp")
# each JSON line gets the variant's name and, from the run's checkpoint, the model's settings and the
# trainer's (so a test can tell when the CLI's default has moved away from the table's default rows)
ADD_SETTINGS='import json, os, sys, torch
r = json.loads(sys.stdin.read())
checkpoint = torch.load(r["checkpoint"], weights_only=True)
r.update(config=checkpoint["config"], train=checkpoint["train"], variant=os.environ["VARIANT"])
print(json.dumps(r))'
VARIANT_NAMES=${VARIANT_NAMES:-"plain GAN|feature matching|denoising feature matching|packing (PacGAN2)|latent mixture|R1 penalty|weight average|earlier default (no packing)|$DEFAULT_NAME"}
IFS='|' read -r -a NAMES <<< "$VARIANT_NAMES"
RUNS=${RUNS:-/tmp/gan_mode_collapse_runs}  # checkpoints, one folder per variant
for variant in "${NAMES[@]}"; do
  for data in $DATASETS; do
    [[ -n "${ONLY_ON[$variant]:-}" && "${ONLY_ON[$variant]}" != "$data" ]] && continue
    for seed in ${SEEDS:-${DEFAULT_SEEDS[$variant]:-0 1 2}}; do
      while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done
      # each line is appended as its run ends (with JOBS > 1 not in the loop's order)
      # shellcheck disable=SC2086
      (OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 DGM_PROGRESS=off $PYTHON -m dgm train gan --data "$data" --seed "$seed" \
          --device cpu --out "$RUNS/${variant//[^A-Za-z0-9]/_}" --set ${VARIANTS[$variant]} \
        | tail -n 1 \
        | VARIANT="$variant" $PYTHON -c "$ADD_SETTINGS" >> "$OUT") &
    done
  done
done
while [ "$(jobs -rp | wc -l)" -gt 0 ]; do wait -n; done
