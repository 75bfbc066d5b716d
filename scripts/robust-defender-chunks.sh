#!/bin/sh
# The shipped robust defender under the adaptive attack on more test images, in chunks of 100
# (resumable: a chunk whose adaptive.csv exists is skipped). Rebuilds the bundle exactly as
# robust-figures/README.md describes (thresholds at 1% FPR on test images 5000-9999).
#   B=target/release/defed OUT=/var/tmp/rf8 BUDGET=linf:0.3 FROM="500 600 700 800 900" \
#     sh scripts/robust-defender-chunks.sh
set -e
B=${B:-target/release/defed}
OUT=${OUT:-/var/tmp/robust-chunks}
BUDGET=${BUDGET:-linf:0.3}
FROM=${FROM:-"500 600 700 800 900"}
D=../shared/data/mnist
IMG="--images $D/t10k-images-idx3-ubyte.gz --labels $D/t10k-labels-idx1-ubyte.gz"
R=models/madry-trades-mnist.safetensors
mkdir -p $OUT
if [ ! -f $OUT/adv2.safetensors ]; then
  [ -f $OUT/calib.npz ] || $B benign --classifier $R $IMG --from 5000 --num 4900 --out $OUT/calib.npz
  $B bundle --classifier $R --denoisers models/defed-adv-mnist-n20.safetensors models/defed-adv-mnist-n60.safetensors models/defed-adv-mnist-n100.safetensors --out $OUT/adv2.tmp.safetensors
  $B calibrate --bundle $OUT/adv2.tmp.safetensors --benign $OUT/calib.npz --num 4900 --fpr 0.01 --policy reject
  mv $OUT/adv2.tmp.safetensors $OUT/adv2.safetensors
fi
n=$(echo $BUDGET | sed "s/linf:/linf/; s/l2:/l2/")
for f in $FROM; do
  [ -f $OUT/s$f.npz ] || $B benign --classifier $R $IMG --from $f --num 100 --include-misclassified --out $OUT/s$f.npz
  d=$OUT/adaptive-robust-adv2-fpr1-$n-images$f-$((f + 99))
  [ -f $d/adaptive.csv ] || $B evaluate --adaptive --bundle $OUT/adv2.safetensors --benign $OUT/s$f.npz --num 100 --budgets $BUDGET --iterations 100 --lambdas 1 10 100 --out $d
  s=$OUT/strong-robust-$n-images$f-$((f + 99))
  norm=${BUDGET%%:*}; eps=${BUDGET#*:}
  [ -f $s/strong.csv ] || $B attack --classifier $R --benign $OUT/s$f.npz --suite strong --norm $norm --eps $eps --out $s
done
echo finished
