#!/bin/sh
# The adaptive-attack figures of README/BENCHMARKS: the pipeline's default bundle and the
# original authors' {20, 60, 100} bundle (k = 2).
set -e
B=${B:-target/release/defed}
S=${S:-../shared/reference/checkpoints/pytorch}
D=${D:-../shared/data/mnist}
OUT=${OUT:-adaptive-figures}
ARGS=${ARGS:---num 20 --iterations 20 --lambdas 1 10}
mkdir -p $OUT
[ -f $OUT/pipe/defender.safetensors ] || $B pipeline --out $OUT/pipe > $OUT/pipe.log 2>&1
$B evaluate --adaptive --bundle $OUT/pipe/defender.safetensors --benign $OUT/pipe/benign.npz $ARGS --out $OUT/adaptive-default > $OUT/adaptive-default.log 2>&1
$B benign --classifier $S/mnist-classifier.pth --images $D/t10k-images-idx3-ubyte.gz --labels $D/t10k-labels-idx1-ubyte.gz --num 1000 --out $OUT/orig-benign.npz
$B bundle --classifier $S/mnist-classifier.pth --denoisers "$S/mnist-laplacian-alpha=1-noise=20.pth" "$S/mnist-laplacian-alpha=1-noise=60.pth" "$S/mnist-laplacian-alpha=1-noise=100.pth" --out $OUT/orig.safetensors
$B calibrate --bundle $OUT/orig.safetensors --benign $OUT/orig-benign.npz --num 500 --k 2
$B evaluate --adaptive --bundle $OUT/orig.safetensors --benign $OUT/orig-benign.npz $ARGS --out $OUT/adaptive-orig > $OUT/adaptive-orig.log 2>&1
echo finished
