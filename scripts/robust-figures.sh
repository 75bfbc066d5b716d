#!/bin/sh
# The robustness evaluation of README "Robust defence": on the first N real MNIST test images
# (from ../shared; nothing here trains on them), robust accuracy of the bare classifiers under
# the strong suite (APGD-CE -> APGD-T -> Square 5,000 queries) and of the bundles under the
# adaptive white-box attack, at Linf 0.1/0.2/0.3 and L2 1/2/3. Bundles are calibrated (k = 2)
# on 500 correctly classified test images from index 9000 on, away from the evaluated ones.
#
# Resumable: each step is skipped when its output exists, so rerunning after an interruption
# continues where it stopped. Set NORMS/EPS to run a subset, e.g.
#   N=1000 ONLY="strong-robust" EPS_LINF="0.3" sh scripts/robust-figures.sh
set -e
B=${B:-target/release/defed}
S=${S:-../shared/reference/checkpoints/pytorch}
D=${D:-../shared/data/mnist}
OUT=${OUT:-robust-figures}
N=${N:-1000}
NA=${NA:-$N}                       # images for the adaptive attack
ARGS=${ARGS:---iterations 100 --lambdas 1 10 100}
EPS_LINF=${EPS_LINF:-0.1 0.2 0.3}
EPS_L2=${EPS_L2:-1 2 3}
ONLY=${ONLY:-strong-lenet strong-robust bundle-paper bundle-robust bundle-robust-adv bundle-robust-adv-fpr1 converge converge-strong}
ROBUST=${ROBUST:-models/madry-trades-mnist.safetensors}
LENET=$S/mnist-classifier.pth
IMG="--images $D/t10k-images-idx3-ubyte.gz --labels $D/t10k-labels-idx1-ubyte.gz"
mkdir -p $OUT

has() { case " $ONLY " in *" $1 "*) return 0;; esac; return 1; }

# The first N test images, clean errors included (robust accuracy is over all of them).
[ -f $OUT/first.npz ] || $B benign --classifier $ROBUST $IMG --num $N --include-misclassified --out $OUT/first.npz

strong() { # name classifier
    for e in $EPS_LINF; do
        [ -f $OUT/strong-$1-linf$e/strong.csv ] || $B attack --classifier $2 --benign $OUT/first.npz --suite strong --norm linf --eps $e --out $OUT/strong-$1-linf$e
    done
    for e in $EPS_L2; do
        [ -f $OUT/strong-$1-l2$e/strong.csv ] || $B attack --classifier $2 --benign $OUT/first.npz --suite strong --norm l2 --eps $e --out $OUT/strong-$1-l2$e
    done
}
has strong-lenet && strong lenet $LENET
has strong-robust && strong robust $ROBUST

# Calibration: CAL_NUM correctly classified test images from index CAL_FROM on, rule CAL_RULE.
CAL_FROM=${CAL_FROM:-9000}
CAL_NUM=${CAL_NUM:-500}
CAL_RULE=${CAL_RULE:---k 2}
bundle() { # name classifier denoisers...
    name=$1; clf=$2; shift 2
    if [ ! -f $OUT/$name.safetensors ]; then
        [ -f $OUT/calib-$name.npz ] || $B benign --classifier $clf $IMG --from $CAL_FROM --num $CAL_NUM --out $OUT/calib-$name.npz
        $B bundle --classifier $clf --denoisers "$@" --out $OUT/$name.tmp.safetensors
        $B calibrate --bundle $OUT/$name.tmp.safetensors --benign $OUT/calib-$name.npz --num $CAL_NUM $CAL_RULE --policy reject
        mv $OUT/$name.tmp.safetensors $OUT/$name.safetensors
    fi
    for e in $EPS_LINF; do
        [ -f $OUT/adaptive-$name-linf$e/adaptive.csv ] || $B evaluate --adaptive --bundle $OUT/$name.safetensors --benign $OUT/first.npz --num $NA --budgets linf:$e $ARGS --out $OUT/adaptive-$name-linf$e
    done
    for e in $EPS_L2; do
        [ -f $OUT/adaptive-$name-l2$e/adaptive.csv ] || $B evaluate --adaptive --bundle $OUT/$name.safetensors --benign $OUT/first.npz --num $NA --budgets l2:$e $ARGS --out $OUT/adaptive-$name-l2$e
    done
}
has bundle-paper && bundle paper $LENET "$S/mnist-laplacian-alpha=1-noise=20.pth" "$S/mnist-laplacian-alpha=1-noise=60.pth" "$S/mnist-laplacian-alpha=1-noise=100.pth"
has bundle-robust && bundle robust $ROBUST models/defed-mnist-n20.safetensors models/defed-mnist-n60.safetensors models/defed-mnist-n100.safetensors
if has bundle-robust-adv && [ -f models/defed-adv-mnist-n20.safetensors ]; then
    bundle robust-adv $ROBUST models/defed-adv-mnist-n20.safetensors models/defed-adv-mnist-n60.safetensors models/defed-adv-mnist-n100.safetensors
fi
# The shipped robust bundle (`adv2`: the denoisers after their second fine-tune) with
# thresholds at a 1% false-positive rate on 4,900 calibration images (test indices 5000-9999,
# away from the evaluated first 1,000).
if has bundle-robust-adv-fpr1 && [ -f models/defed-adv-mnist-n20.safetensors ]; then
    CAL_FROM=5000 CAL_NUM=4900 CAL_RULE="--fpr 0.01" bundle robust-adv2-fpr1 $ROBUST models/defed-adv-mnist-n20.safetensors models/defed-adv-mnist-n60.safetensors models/defed-adv-mnist-n100.safetensors
    # Held-out benign pass rate: the first 2,000 correctly classified test images.
    [ -f $OUT/held.npz ] || $B benign --classifier $ROBUST $IMG --num 2000 --out $OUT/held.npz
    $B defend --bundle $OUT/robust-adv2-fpr1.safetensors $OUT/held.npz | tail -1 | tee $OUT/held-robust-adv2-fpr1.txt
fi
# Convergence of the adaptive attack on the first NC images at Linf 0.3: more iterations and
# restarts should not lower the robust accuracy further.
if has converge; then
    for c in "100 1" "200 1" "100 3"; do
        set -- $c
        [ -f $OUT/converge2-it$1-r$2/adaptive.csv ] || $B evaluate --adaptive --bundle $OUT/robust-adv2-fpr1.safetensors --benign $OUT/first.npz --num ${NC:-30} --budgets linf:0.3 --iterations $1 --restarts $2 --lambdas 1 10 100 --out $OUT/converge2-it$1-r$2
    done
fi
# The same for the bare robust classifier under the strong suite: the first NS images at Linf
# 0.3 with APGD at 100 iterations and one run, 200 iterations, and 3 runs.
if has converge-strong; then
    NS=${NS:-100}
    [ -f $OUT/first$NS.npz ] || $B benign --classifier $ROBUST $IMG --num $NS --include-misclassified --out $OUT/first$NS.npz
    for c in "100 1" "200 1" "100 3"; do
        set -- $c
        [ -f $OUT/converge-strong-it$1-r$2/strong.csv ] || $B attack --classifier $ROBUST --benign $OUT/first$NS.npz --suite strong --norm linf --eps 0.3 --iterations $1 --restarts $2 --out $OUT/converge-strong-it$1-r$2
    done
fi
echo finished
