#!/bin/bash
# usage: lab/codec_floor_fit.sh RUNS SCALE STEPS...  (the release teacher's world and codec, texture_scale SCALE, codec fit for
# STEPS; one teacher step so the stage ends: the codec lands in DIR/codec/codec.pt)
cd "$(dirname "$0")/.."
runs=$1; s=$2; shift 2
for n in "$@"; do
  d=$runs/s${s}_n${n}
  [ -f $d/codec/codec.pt ] && continue
  OMP_NUM_THREADS=1 .venv/bin/python -m trackstream.train experiment=tiny_teacher_release \
    data.world.texture_scale=$s codec.fit.steps=$n trainer.max_steps=1 trainer.num_threads=1 \
    trainer.sample_every=0 eval.enabled=false logger.progress_bar=false hydra.run.dir=$d > $d.log 2>&1
done
