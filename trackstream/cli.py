"""``trackstream``: one command line front over the package's entry points.

    trackstream --help                      # every subcommand, one line each
    trackstream train experiment=tiny_dmd   # = python -m trackstream.train experiment=tiny_dmd
    trackstream generate --help             # = python -m trackstream.stream.generate --help

Each subcommand runs its module exactly as ``python -m`` does (the same arguments, Hydra or argparse),
so both forms keep working and say the same thing. Modules are imported only when their subcommand
runs: ``trackstream --help`` loads no torch.
"""

from __future__ import annotations

import runpy
import sys

__all__ = ["COMMANDS", "main"]

# subcommand -> (module run as __main__, one line of help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("trackstream.pipeline", "the end-to-end job on the embedded world (make run)"),
    "train": ("trackstream.train.app", "Hydra training app: teacher, codec, ODE init, DMD (experiment=...)"),
    "pairs": ("trackstream.train.pairs", "ODE pairs: the teacher's sampling trajectories for ODE init"),
    "prepare": ("trackstream.data.prepare", "real videos -> webdataset shards (decord, tracker, text embeddings)"),
    "eval": ("trackstream.eval", "score runs or exports on a benchmark (EPE, PSNR, SSIM, LPIPS, FID, FVD)"),
    "generate": ("trackstream.stream.generate", "stream a video from an image, tracks and a prompt"),
    "inputs": ("trackstream.stream.inputs", "generate's inputs from a shard sample, or a clip and a tracker"),
    "transfer": ("trackstream.stream.transfer", "motion transfer: a source video's tracks streamed over an image"),
    "camera": ("trackstream.stream.camera", "tracks of a camera move (orbit, pan, zoom, dolly) from an image's depth"),
    "drag": ("trackstream.stream.drag", "DragStream: drag editing of a streamed video"),
    "drag-bench": ("trackstream.eval.drag_bench", "drag quality benchmark (ObjMC, point error, DAI)"),
    "demo": ("trackstream.stream.demo", "the live web demo (drag points, watch the stream)"),
    "bench-realtime": ("trackstream.bench.realtime", "speed: frames/s and latency of the streaming engine"),
    "bench-stream": ("trackstream.bench.stream", "speed: rolling cache vs full context, chunks 5/50/200"),
    "bench-drag": ("trackstream.bench.drag", "speed: DragStream's runtime factor"),
    "bench-train": ("trackstream.bench.train", "speed: one teacher training step at real size"),
    "bench-distill": ("trackstream.bench.distill", "speed: DMD and ODE-init steps at real size"),
    "bench-codec": ("trackstream.bench.codec", "speed: codec encode/decode"),
    "bench-tracks": ("trackstream.bench.tracks", "speed: trackers"),
    "bench-eval": ("trackstream.bench.eval", "speed: the evaluation harness"),
    "plan": ("trackstream.bench.plan", "memory plan of a recipe per GPU (params, optimizer, activations, fit)"),
    "export": ("trackstream.pipeline.export_network", "a trained network as a diffusers or official Wan folder"),
    "flavors": ("trackstream.models.flavors", "list the model flavors (tiny and the real Wan sizes)"),
    "rehearsal-release": (
        "trackstream.pipeline.rehearsal_release",
        "a shrunk Wan release folder (official layout, random weights) to rehearse a real recipe on",
    ),
    "rehearsal-wantrack": (
        "trackstream.pipeline.rehearsal_wantrack",
        "a shrunk WanTrack bundle (FastVideo's Track-v0 / TrackWan layout, random weights)",
    ),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: trackstream <command> [args...]   (trackstream <command> --help for its options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(
            f"trackstream: unknown command {name!r}; one of: {', '.join(COMMANDS)} (trackstream --help)",
            file=sys.stderr,
        )
        return 2
    module = COMMANDS[name][0]
    sys.argv = [f"trackstream {name}", *rest]  # what the module's parser / Hydra sees as its program and args
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=False)
    except SystemExit as done:  # the module's own exit status
        if done.code is None or isinstance(done.code, int):
            return done.code or 0
        print(done.code, file=sys.stderr)  # SystemExit("error: ..."): the refusal, as the interpreter prints it
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
