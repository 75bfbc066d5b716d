#!/bin/sh
# README "On the paper's attacks": the original authors' LeNet with two {20, 60, 100} Defed
# sets -- the authors' (fit on the MNIST test split) and defed's (trained on the 9,000 embedded
# digits against the same LeNet, models/defed-lenet0-mnist-n*) -- on identical images:
# thresholds (k = 2) from benign test images 0-499 of the correctly classified ones, benign pass
# on 500-999, and the paper's attack grid (`defed attack --suite paper`) on NADV other benign
# images (from test index 1100 on). Resumable: finished steps are skipped.
set -e
B=${B:-target/release/defed}
S=${S:-../shared/reference/checkpoints/pytorch}
D=${D:-../shared/data/mnist}
OUT=${OUT:-paper-table}
NADV=${NADV:-200}
LENET=$S/mnist-classifier.pth
IMG="--images $D/t10k-images-idx3-ubyte.gz --labels $D/t10k-labels-idx1-ubyte.gz"
mkdir -p $OUT
[ -f $OUT/benign.npz ] || $B benign --classifier $LENET $IMG --num 1000 --out $OUT/benign.npz
[ -f $OUT/attacked.npz ] || $B benign --classifier $LENET $IMG --from 1100 --num $NADV --out $OUT/attacked.npz
[ -f $OUT/adv/summary.csv ] || $B attack --classifier $LENET --benign $OUT/attacked.npz --suite paper --out $OUT/adv
table() { # name denoisers...
    name=$1; shift
    [ -f $OUT/$name.safetensors ] || $B bundle --classifier $LENET --denoisers "$@" --out $OUT/$name.safetensors
    [ -f $OUT/eval-$name/results.csv ] || $B evaluate --bundle $OUT/$name.safetensors --benign $OUT/benign.npz --calibration 500 --adv $OUT/adv --k 2 --out $OUT/eval-$name
}
table authors "$S/mnist-laplacian-alpha=1-noise=20.pth" "$S/mnist-laplacian-alpha=1-noise=60.pth" "$S/mnist-laplacian-alpha=1-noise=100.pth"
if [ -f models/defed-lenet0-mnist-n100.safetensors ]; then
    table defed models/defed-lenet0-mnist-n20.safetensors models/defed-lenet0-mnist-n60.safetensors models/defed-lenet0-mnist-n100.safetensors
fi
echo finished
