#!/bin/sh
# README "What limits the pipeline's detection": the pipeline's attack grid and k = 2 rule
# (`defed pipeline --no-robust --adaptive 0`) with other classifiers and denoisers, to separate
# the classifier's part from the denoisers'. On the real MNIST test split (evaluation only: 600
# correctly classified test images, thresholds from the first 300) and on the embedded held-out
# digits (what `defed pipeline` measures by default). Resumable: a finished run is skipped.
#   B=target/release/defed OUT=/var/tmp/pipeline-classifiers sh scripts/pipeline-classifiers.sh
set -e
B=${B:-target/release/defed}
S=${S:-../shared/reference/checkpoints/pytorch}
D=${D:-../shared/data/mnist}
OUT=${OUT:-/var/tmp/pipeline-classifiers}
LENET0=$S/mnist-classifier.pth
AUTHORS="$S/mnist-laplacian-alpha=1-noise=20.pth $S/mnist-laplacian-alpha=1-noise=60.pth $S/mnist-laplacian-alpha=1-noise=100.pth"
OURS0="models/defed-lenet0-mnist-n20.safetensors models/defed-lenet0-mnist-n60.safetensors models/defed-lenet0-mnist-n100.safetensors"
mkdir -p $OUT
[ -f $OUT/test.npz ] || $B benign --classifier models/lenet-mnist.safetensors \
    --images $D/t10k-images-idx3-ubyte.gz --labels $D/t10k-labels-idx1-ubyte.gz \
    --include-misclassified --num 10000 --out $OUT/test.npz
run() { # name pipeline-options...
    name=$1; shift
    [ -f $OUT/$name/report.md ] || $B pipeline --no-robust --adaptive 0 "$@" --out $OUT/$name > $OUT/$name.txt
    grep -A9 "k=2" $OUT/$name.txt | sed "s/^/$name: /"
}
# The real test split.
run test-authors --dataset $OUT/test.npz --classifier $LENET0 --denoisers $AUTHORS
run test-lenet0 --dataset $OUT/test.npz --classifier $LENET0 --denoisers $OURS0
run test-default --dataset $OUT/test.npz
# The embedded held-out digits (the authors' LeNet was trained on them: not run there).
run digits-default
run digits-lenet0den --denoisers $OURS0
# A LeNet augmented without the elastic distortion (99.1% on the validation digits).
[ -f $OUT/lenet-sr.safetensors ] || $B train classifier --shift 2 --rotate 10 --scale 0.1 \
    --epochs 100 --milestones 70 90 --seed 0 --name lenet-sr --out $OUT
run digits-sr-lenet0den --classifier $OUT/lenet-sr.safetensors --denoisers $OURS0
echo finished
