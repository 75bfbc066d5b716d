#!/bin/bash
# The paper's attack grid as a SLURM job array: task i runs shard i of 4 into its own folder
# on the shared file system; a dependent job merges the folders when every task has ended.
#
#   bash deploy/slurm/attack-grid.sh     # submits itself as the array, then the merge
#   (or `sbatch deploy/slurm/attack-grid.sh` for the array alone)
#
# RESULTS must be on a file system every node sees; CLASSIFIER and BENIGN must exist there
# (`defed benign --classifier ... --out $RESULTS/benign.npz`).
#SBATCH --job-name=defed-attack
#SBATCH --array=0-3
#SBATCH --cpus-per-task=8
#SBATCH --mem=4G
#SBATCH --time=06:00:00
#SBATCH --output=defed-attack-%A_%a.out
set -euo pipefail

SHARDS=4
RESULTS=${RESULTS:-$HOME/defed-results}
CLASSIFIER=${CLASSIFIER:-$RESULTS/models/classifier.safetensors}
BENIGN=${BENIGN:-$RESULTS/benign.npz}

if [ -z "${SLURM_ARRAY_TASK_ID:-}" ]; then
    # Run by hand: submit the array, then the merge after it.
    array=$(sbatch --parsable "$0")
    sbatch --dependency="afterok:${array}" --job-name=defed-merge --cpus-per-task=1 \
        --wrap="defed merge $RESULTS/attack/shard-* --out $RESULTS/attack/merged"
    exit 0
fi

export RAYON_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}
defed attack --classifier "$CLASSIFIER" --benign "$BENIGN" --suite paper \
    --shard "${SLURM_ARRAY_TASK_ID}/${SHARDS}" \
    --out "$RESULTS/attack/shard-${SLURM_ARRAY_TASK_ID}"
