#!/usr/bin/env bash
# GPU check: build with the CUDA backend, run the parity, multi-task and training tests, the
# benchmark (with the server under load) and one epoch of UCI training on the GPU.
# Needs an NVIDIA GPU with its driver and CUDA toolkit; the model in models/all-MiniLM-L6-v2
# (scripts/fetch-model.sh, or MTL_MODEL_DIR) and ../shared (or MTL_SHARED) for the fixtures.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${MTL_MODEL_DIR:-}" ] || scripts/fetch-model.sh
model="${MTL_MODEL_DIR:-models/all-MiniLM-L6-v2}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
cargo build --release --features cuda --bin mtl --examples --tests
# The tests run on the backend compiled in: CUDA here (burn's operations, no kernels of ours).
cargo test --release --features cuda --test encoder_parity --test multitask --test training -- --nocapture
target/release/mtl bench --model "$model" \
    --corpus "${MTL_SHARED:-../shared}/bench/corpus.txt" --batch1-sentences 0 --serve
shared="${MTL_SHARED:-../shared}"
target/release/mtl train --model "$model" --quiet \
    --train "$shared/data/uci-mtl/train.tsv" --dev "$shared/data/uci-mtl/dev.tsv" \
    --test "$shared/data/uci-mtl/test.tsv" --out runs/gpu-check --epochs 1 --seed 1
cat runs/gpu-check/results.json
