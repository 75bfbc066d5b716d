#!/bin/bash
# GPU check on a device machine (run from the repository root there): defed on burn's Vulkan
# backend vs PyTorch CUDA on the same GPU (`defed bench`, `scripts/bench_pytorch.py --device
# cuda`), then a time-boxed Defed-Laplacian n40 training run on Vulkan; results in $OUT.
# Prepare here (ignored folders, carried to the device):
#   cargo build --release --features vulkan            (separate CARGO_TARGET_DIR; ~1 h clean)
#   mkdir -p .gpu && strip -o /tmp/defed target/release/defed && gzip -9c /tmp/defed > .gpu/defed.gz
#   cp ../shared/reference/checkpoints/pytorch/mnist-classifier.pth .gpu/
#   .gl/: the Vulkan/EGL loader .debs (libvulkan1 libegl1 libglvnd0 ...), see the device notes.
# Run there with BUDGET=<seconds> bash scripts/gpu-bench.sh
START=$(date +%s); DEADLINE=$((START + ${BUDGET:-480}))
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
[ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ] && export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -f /usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json ] && export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
nvidia-smi -L; ldconfig -p | grep -c libvulkan; ls /usr/share/vulkan/icd.d /etc/vulkan/icd.d 2>/dev/null
gzip -dc .gpu/defed.gz > /tmp/defed && chmod +x /tmp/defed; B=/tmp/defed
timeout 150 $B --device vulkan bench --seconds 3 --json $OUT/bench-vulkan.json 2>&1 | tail -25
echo "--- pytorch cuda"
DEFED_CKPT_DIR=.gpu/ PYTHONUNBUFFERED=1 timeout 100 python3 scripts/bench_pytorch.py --device cuda > $OUT/bench-pytorch-cuda.json 2> $OUT/pytorch.err; tail -3 $OUT/pytorch.err; cat $OUT/bench-pytorch-cuda.json
[ -s $OUT/bench-vulkan.json ] || { echo "no vulkan bench: skipping training"; exit 0; }
LEFT=$((DEADLINE - $(date +%s) - 25))
EPOCHS=$(python3 -c "
import json; r = {w['name']: w['images_per_second'] for w in json.load(open('$OUT/bench-vulkan.json'))['workloads']}
print(max(3, int(r['defed_train_step'] * 0.6 * $LEFT / 9000)))")
M1=$((EPOCHS / 3)); M2=$((2 * EPOCHS / 3))
echo "--- training $EPOCHS epochs (milestones $M1 $M2) in $LEFT s"
mkdir -p /tmp/run
timeout $LEFT $B --device vulkan train denoiser --arch defed --edge laplacian --classifier .gpu/mnist-classifier.pth \
  --noise 40 --alpha 1 --epochs $EPOCHS --milestones $M1 $M2 --batch-size 32 --out /tmp/run 2>&1 | tr '\r' '\n' | grep -v "^\s*$" | tail -15
tar -C /tmp -cf $OUT/run.tar run; ls -la /tmp/run
