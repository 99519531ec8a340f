# Sourced by slurm/submit.sh and slurm/chain.sh: the sbatch resource options from the environment.
#
#   NODES          nodes (default: the stage file's #SBATCH --nodes)
#   GPUS_PER_NODE  GPUs per node, one task each (torchrun layout: one task per node) (default 8)
#   CPUS_PER_GPU   CPU cores per GPU (default 12)
#   MEM            memory per node, sbatch --mem (default 0 = all of the node's; e.g. MEM=480G)
#   TIME           time limit, sbatch --time (default: the stage file's, 12-72 h)
#   SIGNAL_LEAD    seconds of preemption warning, sbatch --signal with the stage file's receiver and signal
#                  (default: the stage file's, 120 s); `trackstream plan` computes what a recipe needs
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

# slurm_signal SCRIPT: sets the array SIGNAL to SCRIPT's own --signal (who receives it, which signal) with
# SIGNAL_LEAD seconds of warning; empty when SIGNAL_LEAD is unset (the file's #SBATCH line stands)
slurm_signal() {
    SIGNAL=()
    [[ -z ${SIGNAL_LEAD:-} ]] && return 0
    if [[ ! $SIGNAL_LEAD =~ ^[0-9]+$ ]] || ((SIGNAL_LEAD < 30)); then
        echo "[slurm] SIGNAL_LEAD=$SIGNAL_LEAD: give the preemption warning in whole seconds, >= 30 (trackstream plan says what a recipe needs)" >&2
        return 2
    fi
    local line
    line=$(grep -m1 '^#SBATCH --signal=' "$1") || { echo "[slurm] $1 has no #SBATCH --signal line" >&2; return 2; }
    line=${line#\#SBATCH --signal=}
    SIGNAL=(--signal="${line%@*}@$SIGNAL_LEAD")
}
