#!/usr/bin/env bash
# Chapter 4's mode-collapse table: every run is `python -m dgm train gan` (the CLI's code path),
# one line of JSON per run appended to data/gan_mode_collapse.jsonl with the variant's name added.
#
#   bash data/gan_mode_collapse.sh            # all data sets, variants and seeds 0..4
#   SEEDS="0 1" DATASETS=ring-sharp STEPS=3000 bash data/gan_mode_collapse.sh
#
# STEPS (default 1500, half the CLI's 3000) halves the time of the 50 runs; every line
# records its steps. Runs one at a time with OMP_NUM_THREADS=1 (single-thread CPU seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-data/gan_mode_collapse.jsonl}
SEEDS=${SEEDS:-"0 1 2 3 4"}
DATASETS=${DATASETS:-"ring-sharp grid-sharp"}
PYTHON=${PYTHON:-python}
STEPS=${STEPS:-1500}
declare -A VARIANTS=(
  ["plain GAN"]="pack=1 latent_components=0"
  ["feature matching"]="loss=feature_matching pack=1 latent_components=0"
  ["denoising feature matching"]="loss=denoising pack=1 latent_components=0"
  ["PacGAN2"]="pack=2 latent_components=0"
  ["PacGAN2 + latent mixture (default)"]="pack=2 latent_components=50"
)
for data in $DATASETS; do
  for variant in "plain GAN" "feature matching" "denoising feature matching" "PacGAN2" "PacGAN2 + latent mixture (default)"; do
    for seed in $SEEDS; do
      # shellcheck disable=SC2086
      OMP_NUM_THREADS=1 DGM_PROGRESS=off $PYTHON -m dgm train gan --data "$data" --seed "$seed" --steps "$STEPS" --device cpu \
          --out /tmp/gan_mode_collapse_runs --set ${VARIANTS[$variant]} \
        | tail -n 1 \
        | VARIANT="$variant" $PYTHON -c 'import json, os, sys; r = json.loads(sys.stdin.read()); r["variant"] = os.environ["VARIANT"]; print(json.dumps(r))' \
        >> "$OUT"
    done
  done
done
