#!/usr/bin/env bash
# The GPU figures of docs/performance.md (docs/bench/h100), as steps that fit the 10-minute calls of a lent machine.
#
#   bash lab/gpu_bench.sh OUT_DIR STEP [STEP ...]
#     STEP = rt:SETUP:MODE[:EXTRA]  the realtime benchmark (MODE eager | compiled | both; EXTRA e.g. overlap)
#          | distill:CONFIG         one DMD / ODE-init recipe's updates
#   e.g. bash lab/gpu_bench.sh $OUT rt:wan1.3b-480p-taehv:eager rt:wan1.3b-480p-taehv:compiled distill:ode_init_wan1.3b_480p
#
# Each step runs under its own time limit (STEP_LIMIT seconds, default 280: a cold compilation of the 1.3B step
# alone takes minutes) and writes its JSON into OUT_DIR as it finishes, so a call cut short keeps what finished;
# every table row goes to OUT_DIR/calls.log. Wheels under .whl/ (hydra-core, omegaconf, antlr4) are installed
# first where the machine lacks them. Random weights in the real configurations: no checkpoint, data or text
# encoder is needed.
set -u
out=${1:?output folder}
shift
mkdir -p "$out"
if [ -d .whl ] && ! python3 -c "import hydra, omegaconf" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
log="$out/calls.log"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$log"
for s in "$@"; do
  IFS=: read -r kind name mode extra <<<"$s"
  case $kind in
    rt)
      tag="realtime_${name}_${mode}${extra:+_$extra}"
      cmd=(python3 -m trackstream.bench.realtime --setup "$name" --mode "$mode" --out "$out/$tag.json")
      [ "${extra:-}" = overlap ] && cmd+=(--overlap-decode)
      ;;
    distill)
      tag="distill_$name"
      cmd=(python3 -m trackstream.bench.distill --configs "$name" --steps 5 --out "$out/$tag.json")
      ;;
    *)
      echo "unknown step $s: rt:SETUP:MODE[:overlap] | distill:CONFIG" >&2
      exit 2
      ;;
  esac
  echo "=== $tag ($(date -u +%H:%M:%S), limit ${STEP_LIMIT:-280}s): ${cmd[*]}" | tee -a "$log"
  t0=$SECONDS
  timeout "${STEP_LIMIT:-280}" "${cmd[@]}" 2>&1 | grep -v -E "warn" | tee "$out/$tag.log" | grep -E "^\||wrote|rror" | tee -a "$log"
  echo "=== $tag done in $((SECONDS - t0)) s" | tee -a "$log"
done
