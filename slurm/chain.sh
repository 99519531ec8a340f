#!/bin/bash
# Submit the whole recipe as dependent Slurm jobs: teacher -> ODE pairs -> ODE init -> DMD (-> RL). A job
# starts only once the previous one has completed successfully (--dependency=afterok: a requeued
# job has not completed, so preemptions just delay the chain; a failed one cancels the rest,
# --kill-on-invalid-dep=yes) and gets the previous stages' outputs as Hydra overrides:
#   teacher    RUN_ROOT/<teacher exp>/<job>/export/teacher   -> stage.teacher of the three others
#   ode_pairs  RUN_ROOT/<ode_init exp>/<job>/ode_pairs       -> stage.pairs of ode_init and dmd
#   ode_init   RUN_ROOT/<ode_init exp>/<job>/export/student  -> stage.student of dmd
#   dmd        RUN_ROOT/<dmd exp>/<job>/export/student       -> stage.student of rl (with RL=1; pairs as dmd's)
# The run directories are slurm/stage.sbatch's default (RUN_ROOT/EXPERIMENT/SLURM_JOB_ID), known as
# soon as sbatch answers with the job id. Run it from anywhere; it submits from the repository root.
#
#   slurm/chain.sh                                    # the 1.3B 480p recipe (MODEL=wan1.3b_480p)
#   MODEL=wan2.2_5b_704p slurm/chain.sh               # teacher_/ode_init_/dmd_wan2.2_5b_704p
#   FINETUNE_EXPERIMENT=teacher_wan1.3b_480p_finetune slurm/chain.sh   # + teacher stage 2: 5 jobs
#   TEACHER=runs/teacher_wan1.3b_480p/123/export/teacher slurm/chain.sh  # an existing teacher: 3 jobs
#   DMD_SBATCH="--nodes=1" slurm/chain.sh        # DMD on 8 GPUs (grad_accum 8 derived from global_batch 64)
#   RL=1 RL_OVERRIDES="stage.rewards.aesthetic.clip=<clip> stage.rewards.aesthetic.head=<head>" slurm/chain.sh
#                                                     # + AR-Drag's RL stage after DMD (rl_<model>): 5 jobs
#   slurm/chain.sh paths.data_dir=/data/ts            # trailing arguments: overrides for every stage
#
# Environment:
#   MODEL                experiment suffix (default wan1.3b_480p)
#   TEACHER_EXPERIMENT, ODE_INIT_EXPERIMENT (also the pairs'), DMD_EXPERIMENT   explicit names instead
#   FINETUNE_EXPERIMENT  a second teacher stage (model.init_from = the first one's export)
#   RL=1                 the RL stage after DMD (experiment rl_$MODEL); RL_EXPERIMENT=<name> names another one
#   TEACHER              an exported teacher folder to start from: no teacher job
#   RUN_ROOT             where the runs go (default $PWD/runs; made absolute)
#   TEACHER_SBATCH, FINETUNE_SBATCH, PAIRS_SBATCH, ODE_INIT_SBATCH, DMD_SBATCH, RL_SBATCH
#                        extra sbatch options of one stage (space-separated, before the script)
#   TEACHER_OVERRIDES, FINETUNE_OVERRIDES, PAIRS_OVERRIDES, ODE_INIT_OVERRIDES, DMD_OVERRIDES, RL_OVERRIDES
#                        extra Hydra overrides of one stage (space-separated)
#   SBATCH               the submit command (default sbatch; the tests put a fake one here)
#   WANDB_RUN_GROUP      the W&B group of every stage of this chain (default chain-<MODEL>-<date>-<time>); each
#                        stage's job type is its stage name, its tags the experiment and stage (docs/wandb.md)
#   CONF_DIR             where the experiment names are checked before anything is submitted
#   NODES, GPUS_PER_NODE, CPUS_PER_GPU, MEM, TIME, SIGNAL_LEAD   resources and preemption warning of every stage
#                        (slurm/resources.sh; a stage's <STAGE>_SBATCH still wins, e.g. TEACHER_SBATCH="--signal=USR1@180");
#                        the jobs' logs go to RUN_ROOT/slurm/
#   TRACKSTREAM_SETUP    a file every job sources before its launch (module load, conda activate)
# Partition, account, QoS: sbatch reads SBATCH_PARTITION, SBATCH_ACCOUNT, SBATCH_QOS itself.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUN_ROOT=$(realpath -m "${RUN_ROOT:-$PWD/runs}")
[[ -n ${TEACHER:-} ]] && TEACHER=$(realpath -m "$TEACHER")
CONF_DIR=${CONF_DIR:-$REPO/conf}
read -r -a sbatch_cmd <<< "${SBATCH:-sbatch}"
MODEL=${MODEL:-wan1.3b_480p}
teacher_exp=${TEACHER_EXPERIMENT:-teacher_$MODEL}
finetune_exp=${FINETUNE_EXPERIMENT:-}
ode_init_exp=${ODE_INIT_EXPERIMENT:-ode_init_$MODEL}
dmd_exp=${DMD_EXPERIMENT:-dmd_$MODEL}
rl_exp=${RL_EXPERIMENT:-}
[[ -z $rl_exp && ${RL:-0} == 1 ]] && rl_exp=rl_$MODEL
# --export=ALL would hand an exported RUN_DIR to every job: they would all share one directory.
unset RUN_DIR
# ... and hands this one to every job on purpose: the stages of one chain are one W&B group
export WANDB_RUN_GROUP=${WANDB_RUN_GROUP:-chain-$MODEL-$(date +%Y%m%d-%H%M%S)}

needed=("$ode_init_exp" "$dmd_exp")
[[ -z ${TEACHER:-} ]] && needed+=("$teacher_exp")
[[ -n $finetune_exp ]] && needed+=("$finetune_exp")
[[ -n $rl_exp ]] && needed+=("$rl_exp")
for exp in "${needed[@]}"; do
    if [[ ! -f $CONF_DIR/experiment/$exp.yaml ]]; then
        echo "[chain] no experiment $exp ($CONF_DIR/experiment/$exp.yaml); nothing submitted" >&2
        exit 2
    fi
done
if [[ $RUN_ROOT == *,* ]]; then
    echo "[chain] RUN_ROOT=$RUN_ROOT: a comma would split sbatch --export" >&2
    exit 2
fi
cd "$REPO"  # the per-stage scripts find slurm/stage.sbatch in the submission directory
# shellcheck source=slurm/resources.sh
source "$REPO/slurm/resources.sh"
slurm_resources srun

submitted=()
JOB=
# submit NAME EXPERIMENT SCRIPT AFTER "SBATCH OPTIONS" "OVERRIDES" [overrides...]: sets JOB
submit() {
    local name=$1 exp=$2 script=$3 after=$4 extra_sbatch=$5 extra_overrides=$6
    shift 6
    local -a opts=() more=() stage_overrides=()
    [[ -n $after ]] && opts+=(--dependency="afterok:$after" --kill-on-invalid-dep=yes)
    slurm_signal "$REPO/$script"
    opts+=(--export="ALL,EXPERIMENT=$exp,RUN_ROOT=$RUN_ROOT" "${RESOURCES[@]}" "${SIGNAL[@]}")
    read -r -a more <<< "$extra_sbatch"
    read -r -a stage_overrides <<< "$extra_overrides"
    local out
    if ! out=$("${sbatch_cmd[@]}" "${opts[@]}" "${more[@]}" "$script" "$@" "${stage_overrides[@]}" "${common[@]}"); then
        echo "[chain] sbatch failed for $name; already submitted: ${submitted[*]:-none} (scancel them if unwanted)" >&2
        exit 1
    fi
    JOB=${out##* }  # "Submitted batch job 123" (or --parsable's "123;cluster")
    JOB=${JOB%%;*}
    if [[ ! $JOB =~ ^[0-9]+$ ]]; then
        echo "[chain] $name: no job id in sbatch's answer '$out'; already submitted: ${submitted[*]:-none}" >&2
        exit 1
    fi
    submitted+=("$JOB")
    printf '[chain] %-9s job %-9s %s%s\n' "$name" "$JOB" "$RUN_ROOT/$exp/$JOB" "${after:+  (after $after)}"
}

common=("$@")
after=
if [[ -z ${TEACHER:-} ]]; then
    submit teacher "$teacher_exp" slurm/teacher.sbatch "" "${TEACHER_SBATCH:-}" "${TEACHER_OVERRIDES:-}"
    TEACHER=$RUN_ROOT/$teacher_exp/$JOB/export/teacher
    after=$JOB
fi
if [[ -n $finetune_exp ]]; then
    submit finetune "$finetune_exp" slurm/teacher.sbatch "$after" "${FINETUNE_SBATCH:-}" "${FINETUNE_OVERRIDES:-}" \
        model.init_from="$TEACHER"
    TEACHER=$RUN_ROOT/$finetune_exp/$JOB/export/teacher
    after=$JOB
fi
submit ode_pairs "$ode_init_exp" slurm/ode_pairs.sbatch "$after" "${PAIRS_SBATCH:-}" "${PAIRS_OVERRIDES:-}" \
    stage.teacher="$TEACHER"
PAIRS=$RUN_ROOT/$ode_init_exp/$JOB/ode_pairs
submit ode_init "$ode_init_exp" slurm/ode_init.sbatch "$JOB" "${ODE_INIT_SBATCH:-}" "${ODE_INIT_OVERRIDES:-}" \
    stage.teacher="$TEACHER" stage.pairs="$PAIRS"
STUDENT=$RUN_ROOT/$ode_init_exp/$JOB/export/student
submit dmd "$dmd_exp" slurm/dmd.sbatch "$JOB" "${DMD_SBATCH:-}" "${DMD_OVERRIDES:-}" \
    stage.teacher="$TEACHER" stage.pairs="$PAIRS" stage.student="$STUDENT"
final=$RUN_ROOT/$dmd_exp/$JOB/export/student
if [[ -n $rl_exp ]]; then
    submit rl "$rl_exp" slurm/rl.sbatch "$JOB" "${RL_SBATCH:-}" "${RL_OVERRIDES:-}" \
        stage.student="$final" stage.pairs="$PAIRS"
    final=$RUN_ROOT/$rl_exp/$JOB/export/student
fi
echo "[chain] jobs ${submitted[*]}; the streaming student will be $final; W&B group $WANDB_RUN_GROUP"
