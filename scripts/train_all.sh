#!/usr/bin/env bash
# Rebuild the embedded tiny model from nothing: corpus -> tokenizer -> train -> export -> evaluate.
#
#     bash scripts/train_all.sh            # needs the `train` extra: pip install -e ".[train]" (torch, transformers)
#
# Work files go to $BUILD (default build/tiny); the model goes to miniqwen3/data/tiny with EVAL.json / EVAL.md.
# RESUME=1 continues an interrupted training run from its last checkpoint instead of starting over.
# Every stage is seeded; the corpus depends on the installed Python's standard library (prose and code).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${BUILD:-build/tiny}"
OUT="${OUT:-miniqwen3/data/tiny}"
export PYTHONHASHSEED=0
stage() { echo "== $1 ($(date +%H:%M:%S))"; }
T0=$(date +%s)

stage corpus
python scripts/make_corpus.py --out "$BUILD/corpus" --n 200000 --seed 0

stage tokenizer
python scripts/train_tokenizer.py --corpus "$BUILD/corpus" --out "$BUILD/tokenizer" --vocab 4000

stage train
if [ "${RESUME:-0}" != 1 ]; then rm -rf "$BUILD/run"; fi
T1=$(date +%s)
python scripts/train_tiny.py train --corpus "$BUILD/corpus" --tokenizer "$BUILD/tokenizer" --run "$BUILD/run" \
    --steps 1600 --lr 3e-3 --aux-coef 0.01 --seed 0 ${RESUME:+--resume}
T2=$(date +%s)

stage export
python scripts/train_tiny.py export --run "$BUILD/run" --tokenizer "$BUILD/tokenizer" --out "$OUT"

stage evaluate
python scripts/evaluate_tiny.py --model "$OUT" --corpus "$BUILD/corpus"
T3=$(date +%s)
echo "== done: training $(( (T2 - T1) / 60 )) min, all stages $(( (T3 - T0) / 60 )) min"
