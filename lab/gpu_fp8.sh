#!/usr/bin/env bash
# One lent-machine call (<= 10 minutes in all): the 1.3B TAEHV stream compiled in fp8 (overlapped decode, chunks
# 5-20), trackstream generate --compile in fp8 right after it (the same network and chunk layouts: inductor's
# on-disk cache from the row before, where its graphs match), then the same row in bf16. Each row has its own limit
# (seconds after @) and writes its JSON into OUT_DIR as it finishes (lab/gpu_bench.sh); the realtime rows print
# their build, warm-up (compilation) and timed figures as they go, so a row cut at its limit still says where it was.
#
# Limits from the first H200 call (2026-11-28, docs/bench/h200/fp8-call-2026-11-28.md): the compiled 1.3B rows did
# not finish within 100 s (bf16) or 185 s (fp8) on a fresh machine: the compiled pass holds all 30 blocks, so its
# cold compilation grows with the layers (the CPU rehearsal's warm-up: 20 s at 1 layer, 57 s at 4), and there
# are 3 chunk layouts. fp8 against bf16 on the same inputs (lab.fp8_compare) was measured in that call and is
# not repeated; the Track-v0 and 5B rows wait for a later call.
#
#   bash lab/gpu_fp8.sh OUT_DIR
#   REHEARSE="--layers 1 --height 16 --width 32 --device cpu" PYTHON=.venv/bin/python bash lab/gpu_fp8.sh /tmp/r
set -u
here=$(dirname "$0")
exec bash "$here/gpu_bench.sh" "${1:?output folder}" \
  rt:wan1.3b-480p-taehv:compiled:overlap+fp8+short@300 \
  gen:wan1.3b-480p-taehv:fp8@110 \
  rt:wan1.3b-480p-taehv:compiled:overlap+short@160
