#!/usr/bin/env bash
# The GPU figures of docs/performance.md (docs/bench/h100), as steps that fit the 10-minute calls of a lent machine.
#
#   bash lab/gpu_bench.sh OUT_DIR STEP[@SECONDS] [STEP[@SECONDS] ...]
#     STEP = rt:SETUP:MODE[:EXTRA]  the realtime benchmark (MODE eager | compiled | both; EXTRA: a +-joined
#                                   list of overlap, fp8 (--dtype fp8), short (chunks 5-20, 4 breakdown chunks))
#          | distill:CONFIG         one DMD / ODE-init recipe's updates
#          | fp8cmp:SETUP           lab/fp8_compare.py: fp8 against bf16 on the same inputs
#          | gen:SETUP[:fp8]        lab/gpu_generate.py --compile: trackstream generate's compiled step (generate only)
#   @SECONDS: that step's limit (default STEP_LIMIT). REHEARSE="--layers 1 --height 16 --width 32 --device cpu"
#   appends those flags to rt and fp8cmp steps (a CPU rehearsal of the same steps; gen steps take their own
#   rehearsal sizes, 16 x 32 pixels too: an fp8 run decodes in bf16, and bf16 convolutions on a CPU without bf16
#   instructions (AVX2 only) run ~70x slower than float32: TAEHV decoded 3 latent frames at 64 x 128 in 65 s, 0.95 s in float32). LIMIT_SCALE=K (an integer, default 1)
#   multiplies every limit: the limits are the device's, and a rehearsal on a shared CPU compiles slower.
#   e.g. bash lab/gpu_bench.sh $OUT rt:wan1.3b-480p-taehv:eager rt:wan1.3b-480p-taehv:compiled distill:ode_init_wan1.3b_480p
#
# Each step runs under its own time limit (STEP_LIMIT seconds, default 280: a cold compilation of the 1.3B step
# alone takes minutes) and writes its JSON into OUT_DIR as it finishes, so a call cut short keeps what finished;
# every table row goes to OUT_DIR/calls.log. Wheels under .whl/ (hydra-core, omegaconf, antlr4; ftfy and wcwidth,
# which the UMT5 prompt cleaning of `generate` imports) are installed first where the machine lacks them. Random weights in the real configurations: no checkpoint, data or text
# encoder is needed.
set -u
out=${1:?output folder}
shift
mkdir -p "$out"
if [ -d .whl ] && ! python3 -c "import hydra, omegaconf, ftfy" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
log="$out/calls.log"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | tee -a "$log"
py=${PYTHON:-python3}
read -r -a rehearse <<<"${REHEARSE:-}"
for s in "$@"; do
  limit=${STEP_LIMIT:-280}
  [[ $s == *@* ]] && limit=${s##*@} && s=${s%@*}
  limit=$((limit * ${LIMIT_SCALE:-1}))
  IFS=: read -r kind name mode extra <<<"$s"
  case $kind in
    rt)
      tag="realtime_${name}_${mode}${extra:+_${extra//+/_}}"
      cmd=("$py" -m trackstream.bench.realtime --setup "$name" --mode "$mode" --out "$out/$tag.json")
      [[ +${extra:-}+ == *+overlap+* ]] && cmd+=(--overlap-decode)
      [[ +${extra:-}+ == *+fp8+* ]] && cmd+=(--dtype fp8)
      [[ +${extra:-}+ == *+short+* ]] && cmd+=(--last 20 --breakdown-chunks 4)
      cmd+=("${rehearse[@]}")
      ;;
    fp8cmp)
      tag="fp8_compare_$name"
      cmd=("$py" -m lab.fp8_compare --setup "$name" --out "$out/$tag.json" "${rehearse[@]}")
      ;;
    gen)
      tag="generate_${name}${mode:+_$mode}"
      cmd=("$py" -m lab.gpu_generate --setup "$name" --compile --skip-pipeline --out "/tmp/$tag")
      [ "${mode:-}" = fp8 ] && cmd+=(--dtype fp8)
      [ -n "${REHEARSE:-}" ] && cmd+=(--device cpu --dim 64 --num-layers 1 --num-heads 2 --ffn-dim 128 \
        --height 16 --width 32 --chunks 7 --tracks 20)
      rm -rf "/tmp/$tag"  # its timing JSON is copied below: never an earlier run's
      ;;
    distill)
      tag="distill_$name"
      cmd=("$py" -m trackstream.bench.distill --configs "$name" --steps 5 --out "$out/$tag.json")
      ;;
    *)
      echo "unknown step $s: rt:SETUP:MODE[:EXTRA] | fp8cmp:SETUP | gen:SETUP[:fp8] | distill:CONFIG" >&2
      exit 2
      ;;
  esac
  echo "=== $tag ($(date -u +%H:%M:%S), limit ${limit}s): ${cmd[*]}" | tee -a "$log"
  t0=$SECONDS
  timeout "$limit" "${cmd[@]}" 2>&1 | grep -v -E "warn" | tee "$out/$tag.log" | grep -E "^\||^\[realtime\]|wrote|rror|psnr|fp8_vs" | tee -a "$log"
  [ "$kind" = gen ] && cp "/tmp/$tag/generate_timing.json" "$out/$tag.json" 2>/dev/null
  echo "=== $tag done in $((SECONDS - t0)) s" | tee -a "$log"
done
