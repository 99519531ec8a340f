# Sourced by slurm/submit.sh and slurm/chain.sh: the sbatch resource options from the environment.
#
#   NODES          nodes (default: the stage file's #SBATCH --nodes)
#   GPUS_PER_NODE  GPUs per node, one task each (torchrun layout: one task per node) (default 8)
#   CPUS_PER_GPU   CPU cores per GPU (default 12)
#   MEM            memory per node, sbatch --mem (default 0 = all of the node's; e.g. MEM=480G)
#   TIME           time limit, sbatch --time (default: the stage file's, 12-72 h)
#   partition / account / QoS: SBATCH_PARTITION, SBATCH_ACCOUNT, SBATCH_QOS (sbatch reads them itself)
# Each unset variable leaves the stage file's #SBATCH default. The job's log goes to RUN_ROOT/slurm/
# (%x-%j.out: job name and id), not the submission directory; the run directory gets a copy
# (slurm/stage.sbatch).

# slurm_resources LAYOUT: sets the array RESOURCES (LAYOUT: srun = one task per GPU, torchrun = one per node)
slurm_resources() {
    local layout=${1:-srun} gpus=${GPUS_PER_NODE:-8}
    RESOURCES=()
    if [[ -n ${NODES:-} ]]; then RESOURCES+=(--nodes="$NODES"); fi
    if [[ -n ${GPUS_PER_NODE:-} ]]; then
        RESOURCES+=(--gpus-per-node="$gpus")
        if [[ $layout == torchrun ]]; then RESOURCES+=(--ntasks-per-node=1); else RESOURCES+=(--ntasks-per-node="$gpus"); fi
    fi
    if [[ -n ${CPUS_PER_GPU:-} ]]; then
        if [[ $layout == torchrun ]]; then
            RESOURCES+=(--cpus-per-task=$((CPUS_PER_GPU * gpus)))
        else
            RESOURCES+=(--cpus-per-task="$CPUS_PER_GPU")
        fi
    fi
    if [[ -n ${MEM:-} ]]; then RESOURCES+=(--mem="$MEM"); fi
    if [[ -n ${TIME:-} ]]; then RESOURCES+=(--time="$TIME"); fi
    mkdir -p "$RUN_ROOT/slurm"
    RESOURCES+=(--output="$RUN_ROOT/slurm/%x-%j.out")
}
