#!/bin/bash
# Submit one stage with its resources from the environment (slurm/resources.sh):
#
#   slurm/submit.sh teacher data.eval_shards=/data/ts/eval_shards           # 4 x 8 GPUs, 72 h (teacher.sbatch)
#   NODES=1 TIME=8:00:00 MEM=480G slurm/submit.sh dmd stage.teacher=... stage.student=... stage.pairs=...
#   GPUS_PER_NODE=4 CPUS_PER_GPU=16 SBATCH_PARTITION=a100 EXPERIMENT=teacher_wan2.2_5b_704p slurm/submit.sh teacher
#   LAUNCHER=torchrun slurm/submit.sh teacher                             # one torchrun per node
#   SIGNAL_LEAD=180 EXPERIMENT=teacher_wan14b_480p slurm/submit.sh teacher   # the warning `trackstream plan` says
#   TRACKSTREAM_SETUP=~/ts_env.sh slurm/submit.sh ...    # sourced before the launch: module load, conda activate
#
# STAGE is teacher | ode_pairs | ode_init | dmd | rl; EXPERIMENT, RUN_ROOT, RUN_DIR, PYTHON as slurm/stage.sbatch.
# Trailing arguments are Hydra overrides for every rank. SBATCH=... replaces the submit command.
set -euo pipefail

STAGE=${1:-}
case "$STAGE" in
    teacher | ode_pairs | ode_init | dmd | rl) shift ;;
    *) echo "[submit] usage: slurm/submit.sh teacher|ode_pairs|ode_init|dmd|rl [hydra overrides...]" >&2; exit 2 ;;
esac
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUN_ROOT=$(realpath -m "${RUN_ROOT:-$PWD/runs}")
if [[ $RUN_ROOT == *,* ]]; then
    echo "[submit] RUN_ROOT=$RUN_ROOT: a comma would split sbatch --export" >&2
    exit 2
fi
LAUNCHER=${LAUNCHER:-srun}
script=slurm/$STAGE.sbatch
[[ $LAUNCHER == torchrun ]] && script=slurm/teacher_torchrun.sbatch
# shellcheck source=slurm/resources.sh
source "$REPO/slurm/resources.sh"
slurm_resources "$LAUNCHER"
slurm_signal "$REPO/$script"
read -r -a sbatch_cmd <<< "${SBATCH:-sbatch}"
cd "$REPO"  # the stage files find slurm/stage.sbatch in the submission directory
exec "${sbatch_cmd[@]}" --export="ALL,STAGE=$STAGE,LAUNCHER=$LAUNCHER,RUN_ROOT=$RUN_ROOT" "${RESOURCES[@]}" "${SIGNAL[@]}" "$script" "$@"
