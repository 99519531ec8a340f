#!/usr/bin/env bash
# The small world's one device command (docs/small-world.md, "One command"): the carried wheels when there are
# any (.whl: hydra-core, omegaconf, antlr4, diffusers are not on the GPU image), the machine's GPU / torch /
# CUDA, then the whole chain and ship in one budgeted driver process (lab/small_world_oneshot.py), writing into
# $OUT; its log is the last file that comes back. More options are passed on to `small_world oneshot`. The
# carried pruned MiniLM (.minilm) is the text encoder where it is present.
set -o pipefail
: "${OUT:?set OUT: the folder that comes back}"
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONPATH=${PYTHONPATH:-$PWD} PYTHONUNBUFFERED=1
encoder=()
[ -d .minilm ] && encoder=(--text-encoder-path .minilm)
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
python3 -c "import torch, hydra, omegaconf, diffusers; print('torch', torch.__version__, 'cuda', torch.version.cuda)" || exit 1
python3 -m lab.small_world oneshot --run-dir runs/small-world/oneshot --out "$OUT" "${encoder[@]}" "$@" 2>&1 | tee "$OUT/oneshot.log"
