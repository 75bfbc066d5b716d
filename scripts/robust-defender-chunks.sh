#!/bin/sh
# A bundle of README "Robust defence" under the adaptive attack on more test images, in chunks
# of 100 (resumable: a chunk whose adaptive.csv exists is skipped). Rebuilds the bundle exactly as
# robust-figures/README.md describes:
#   BUNDLE=adv2  (default) the shipped robust defender: the shipped classifier + defed-adv-mnist-*,
#                thresholds at 1% FPR on test images 5000-9999; also runs the bare classifier's
#                strong suite on each chunk (STRONG=0: not);
#   BUNDLE=plain the shipped classifier + defed-mnist-* (no adversarial fine-tuning), the same
#                thresholds rule; its recorded chunks were measured before defed-mnist-n100's
#                second fine-tune, so the noise-100 model is that of commit e2bf445 (from git);
#   BUNDLE=paper the authors' LeNet + the authors' Defed {20, 60, 100}, k = 2 from 500 correctly
#                classified test images from index 9000.
#   B=target/release/defed OUT=/var/tmp/rf8 BUDGET=linf:0.3 FROM="500 600 700 800 900" \
#     sh scripts/robust-defender-chunks.sh
# ATTACK replaces the protocol's attack settings and TAG names such runs' folders, e.g. the
# attack that converged on the paper's bundle (README, convergence):
#   BUNDLE=paper ATTACK="--iterations 400 --lambdas 1 10 100 --targets 3" TAG=-it400-t3 ...
# At the end, the budget's chunks in OUT are pooled by `defed merge` into
# OUT/merged-<name>-<budget> (merge them with the recorded ones in robust-figures/ for the
# whole range).
set -e
B=${B:-target/release/defed}
OUT=${OUT:-/var/tmp/robust-chunks}
BUDGET=${BUDGET:-linf:0.3}
FROM=${FROM-"500 600 700 800 900"}
BUNDLE=${BUNDLE:-adv2}
ATTACK=${ATTACK:-"--iterations 100 --lambdas 1 10 100"}
TAG=${TAG:-}
STRONG=${STRONG:-1}
D=../shared/data/mnist
S=../shared/reference/checkpoints/pytorch
IMG="--images $D/t10k-images-idx3-ubyte.gz --labels $D/t10k-labels-idx1-ubyte.gz"
R=models/madry-trades-mnist.safetensors
case $BUNDLE in
  adv2)  CLF=$R; DEN="models/defed-adv-mnist-n20.safetensors models/defed-adv-mnist-n60.safetensors models/defed-adv-mnist-n100.safetensors"
         CAL="--from 5000 --num 4900"; RULE="--num 4900 --fpr 0.01"; NAME=robust-adv2-fpr1 ;;
  plain) CLF=$R; N100=$OUT/defed-mnist-n100-e2bf445.safetensors; mkdir -p $OUT
         [ -f $N100 ] || { git show e2bf445:models/defed-mnist-n100.safetensors > $N100.tmp && mv $N100.tmp $N100; } \
           || { rm -f $N100.tmp; echo "BUNDLE=plain needs the git history (commit e2bf445's defed-mnist-n100)" >&2; exit 2; }
         DEN="models/defed-mnist-n20.safetensors models/defed-mnist-n60.safetensors $N100"
         CAL="--from 5000 --num 4900"; RULE="--num 4900 --fpr 0.01"; NAME=robust-plain-fpr1 ;;
  paper) CLF=$S/mnist-classifier.pth
         DEN="$S/mnist-laplacian-alpha=1-noise=20.pth $S/mnist-laplacian-alpha=1-noise=60.pth $S/mnist-laplacian-alpha=1-noise=100.pth"
         CAL="--from 9000 --num 500"; RULE="--num 500 --k 2"; NAME=paper ;;
  *) echo "BUNDLE must be adv2, plain or paper" >&2; exit 2 ;;
esac
mkdir -p $OUT
if [ ! -f $OUT/$BUNDLE.safetensors ]; then
  [ -f $OUT/calib-$BUNDLE.npz ] || $B benign --classifier $CLF $IMG $CAL --out $OUT/calib-$BUNDLE.npz
  $B bundle --classifier $CLF --denoisers $DEN --out $OUT/$BUNDLE.tmp.safetensors
  $B calibrate --bundle $OUT/$BUNDLE.tmp.safetensors --benign $OUT/calib-$BUNDLE.npz $RULE --policy reject
  mv $OUT/$BUNDLE.tmp.safetensors $OUT/$BUNDLE.safetensors
fi
n=$(echo $BUDGET | sed "s/linf:/linf/; s/l2:/l2/")
for f in $FROM; do
  [ -f $OUT/s$f.npz ] || $B benign --classifier $R $IMG --from $f --num 100 --include-misclassified --out $OUT/s$f.npz
  d=$OUT/adaptive-$NAME$TAG-$n-images$f-$((f + 99))
  [ -f $d/adaptive.csv ] || $B evaluate --adaptive --bundle $OUT/$BUNDLE.safetensors --benign $OUT/s$f.npz --num 100 --budgets $BUDGET $ATTACK --out $d
  [ $BUNDLE = adv2 ] && [ "$STRONG" != 0 ] || continue
  s=$OUT/strong-robust-$n-images$f-$((f + 99))
  norm=${BUDGET%%:*}; eps=${BUDGET#*:}
  [ -f $s/strong.csv ] || $B attack --classifier $R --benign $OUT/s$f.npz --suite strong --norm $norm --eps $eps --out $s
done
# The chunks of this budget in OUT, pooled (robust accuracy under both policies, each chunk's).
$B merge $OUT/adaptive-$NAME$TAG-$n-images* --out $OUT/merged-$NAME$TAG-$n
echo finished
