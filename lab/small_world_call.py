"""The small world's one device command (docs/small-world.md, "One command"), standard library only so that
it runs before the carried wheels are installed:

    python -m lab.small_world_call --budget-min 9 [more small_world oneshot options]

installs the carried wheels when there are any (``.whl``: hydra-core, omegaconf, antlr4, diffusers are not on
the GPU image) into /tmp/site, prints the GPU, torch and CUDA, then runs ``python -m lab.small_world oneshot
--run-dir runs/small-world/oneshot --out $OUT`` (with the carried pruned MiniLM, ``.minilm``, where present)
and copies its output into ``$OUT/oneshot.log``, the last file that comes back."""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab.small_world_call", description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget-min", type=float, default=9.0, help="the driver's whole budget (small_world oneshot)")
    args, more = ap.parse_known_args(argv)  # the rest goes on to `small_world oneshot`
    out = os.environ.get("OUT")
    if not out:
        print("[small_world_call] error: set OUT, the folder that comes back", file=sys.stderr)
        return 2
    Path(out).mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    path = [os.getcwd(), *filter(None, [env.get("PYTHONPATH")])]
    wheels = sorted(glob.glob(".whl/*.whl"))
    if wheels:
        pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile"]
        subprocess.run([*pip, "--no-cache-dir", "--upgrade", "--target", "/tmp/site", *wheels], check=True)
        path.insert(0, "/tmp/site")
    env["PYTHONPATH"] = os.pathsep.join(path)
    if shutil.which("nvidia-smi"):
        subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv"])
    check = "import torch, hydra, omegaconf, diffusers; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
    if subprocess.run([sys.executable, "-c", check], env=env).returncode:
        return 1
    cmd = [sys.executable, "-m", "lab.small_world", "oneshot", "--run-dir", "runs/small-world/oneshot", "--out", out]
    if Path(".minilm").is_dir():
        cmd += ["--text-encoder-path", ".minilm"]
    cmd += ["--budget-min", str(args.budget_min), *more]
    with open(Path(out) / "oneshot.log", "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            sys.stdout.write(line)
            log.write(line)
            log.flush()
    return proc.wait()


if __name__ == "__main__":
    sys.exit(main())
