#!/usr/bin/env bash
# One lent-machine call (<= 7 minutes in all; the 5B row, measured on an H100 before, is left out so that the
# session's other device call has time): the 1.3B TAEHV row in bf16 and fp8 (compiled, overlapped decode,
# chunks 5-20), fp8 against bf16 on the same inputs, the Track-v0 setup, and trackstream generate --compile in
# fp8 (the row expected fastest; gen:wan1.3b-480p-taehv for bf16). Each row has
# its own limit (seconds after @) and writes its JSON into OUT_DIR as it finishes (lab/gpu_bench.sh).
#
#   bash lab/gpu_fp8.sh OUT_DIR
#   REHEARSE="--layers 1 --height 64 --width 128 --device cpu" PYTHON=.venv/bin/python bash lab/gpu_fp8.sh /tmp/r
set -u
here=$(dirname "$0")
exec bash "$here/gpu_bench.sh" "${1:?output folder}" \
  rt:wan1.3b-480p-taehv:compiled:overlap+short@100 \
  rt:wan1.3b-480p-taehv:compiled:overlap+fp8+short@100 \
  fp8cmp:wan1.3b-480p-taehv@45 \
  rt:trackv0-480p-taehv:compiled:overlap+short@90 \
  gen:wan1.3b-480p-taehv:fp8@80
