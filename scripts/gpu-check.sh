#!/usr/bin/env bash
# GPU check: build with the CUDA backend, run the parity tests and the benchmark on the GPU.
# Needs an NVIDIA GPU with its driver and CUDA toolkit; the model in models/all-MiniLM-L6-v2
# (scripts/fetch-model.sh, or MTL_MODEL_DIR) and ../shared (or MTL_SHARED) for the fixtures.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${MTL_MODEL_DIR:-}" ] || scripts/fetch-model.sh
model="${MTL_MODEL_DIR:-models/all-MiniLM-L6-v2}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
cargo build --release --features cuda --example bench --tests
cargo test --release --features cuda --test encoder_parity -- --nocapture
cargo run --release --features cuda --example bench -- --model "$model" \
    --corpus "${MTL_SHARED:-../shared}/bench/corpus.txt" --batch1-sentences 0
