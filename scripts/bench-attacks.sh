#!/usr/bin/env bash
# Times every attack on the first 200 benign MNIST test images against the original LeNet,
# batch 32, and prints the success and seconds per image (BENCHMARKS.md, "Attacks").
# Needs ../shared (the original checkpoints and the MNIST test split) and a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/defed-target}"
cargo build --release --quiet
B="$CARGO_TARGET_DIR/release/defed"
S=../shared
CLF=$S/reference/checkpoints/pytorch/mnist-classifier.pth
OUT=$(mktemp -d)
"$B" benign --classifier "$CLF" --images $S/data/mnist/t10k-images-idx3-ubyte.gz \
    --labels $S/data/mnist/t10k-labels-idx1-ubyte.gz --num 200 --out "$OUT/benign.npz"
run() { "$B" attack --classifier "$CLF" --benign "$OUT/benign.npz" --batch-size 32 --out "$OUT/adv" "$@"; }
run --attack pgd --norm linf --eps 0.3
run --attack fgsm --norm linf --eps 0.3
run --attack pgd --norm l2 --eps 2
run --attack pgd --norm l1 --eps 20
run --attack deepfool
run --attack jsma
run --attack cw-linf --eps 64/256
run --attack cw-l2 --num 50
run --attack hsj --norm l2
run --attack hsj --norm linf
run --attack square --eps 64/256 128/256
rm -rf "$OUT"
