"""The community's checkpoints in and out (docs/checkpoints.md).

In: training ``.pt`` files that hold several networks, in the layout Self-Forcing / CausVid / LongLive
write them (``{"generator": {"model.<official Wan key>": ...}, "generator_ema": ..., "critic": ...}``),
read through ``model.init_from=PATH::<entry>``; LoRA adapter files are refused with the fix.
Out: ``trackstream export`` writes an exported network as a diffusers ``WanTransformer3DModel``
folder or in the official Wan layout; diffusers loads the first and computes what our DiT computes,
and ``model.init_from`` reads both back exactly (track head and text projection included).
"""

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from test_docs_run import EXPORT_DIFFUSERS, EXPORT_OFFICIAL, run_documented

from trackstream.cli import main as cli_main
from trackstream.models.flavors import build_wan
from trackstream.models.formats.checkpoint import read_state_dict, split_subkey
from trackstream.models.formats.wan_formats import CheckpointError
from trackstream.models.motion_wan import ModelConfig, build_motion_wan, load_network, save_network
from trackstream.models.wan_io import load_wan
from trackstream.trainer.weights import initialise

ROOT = Path(__file__).resolve().parents[1]
TEXT_DIM = 384  # MiniLM, the tiny configs' text encoder: the network carries a text projection


def _randomised(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return module


def _training_pt(path: Path, dit, entries=("generator", "generator_ema", "critic"), holds="generator_ema") -> Path:
    """A training checkpoint as the Self-Forcing family saves it: one entry per network, the causal
    Wan under the wrapper's ``model.`` prefix with the official key names. Entry ``holds`` has
    ``dit``'s weights, the others those plus one, so a test can tell which entry was read."""
    sd = {f"model.{k}": v.clone() for k, v in dit.state_dict().items()}
    obj = {}
    for name in entries:
        obj[name] = sd if name == holds else {k: v + 1 for k, v in sd.items()}
    torch.save(obj, path)
    return path


def test_split_subkey(tmp_path):
    assert split_subkey("a/b/model.pt::generator_ema") == ("a/b/model.pt", "generator_ema")
    assert split_subkey("a/b/model.pt") == ("a/b/model.pt", None)
    assert split_subkey("x::y/z.pt") == ("x::y/z.pt", None)  # what follows is a path, not an entry
    odd = tmp_path / "run::3.pt"
    odd.write_bytes(b"")
    assert split_subkey(str(odd)) == (str(odd), None)  # an existing path is never split
    with pytest.raises(CheckpointError, match="nothing before"):
        split_subkey("::generator")


@pytest.mark.slow
@pytest.mark.parametrize(
    "project, entries, entry",
    [
        ("Self-Forcing", ("generator", "critic", "generator_ema"), "generator_ema"),
        ("CausVid", ("generator", "critic"), "generator"),  # no EMA in CausVid
        ("LongLive base", ("generator", "critic"), "generator"),
    ],
)
def test_training_pt_entries_load_by_subkey(tmp_path, project, entries, entry):
    dit = _randomised(build_wan("tiny"))
    pt = _training_pt(tmp_path / "model.pt", dit, entries, holds=entry)
    got = load_wan(pt, config=dit.config(), subkey=entry)
    assert all(torch.equal(a, b) for a, b in zip(got.state_dict().values(), dit.state_dict().values())), project
    # the same through model.init_from: the 16-channel T2V DiT grown with zero track channels
    net = build_motion_wan(ModelConfig(flavor="tiny", layout="t2v", track_channels=8), text_encoder_dim=TEXT_DIM)
    initialise(net, init_from=f"{pt}::{entry}")
    w = net.dit.patch_embedding.weight
    assert torch.equal(w[:, :16], dit.patch_embedding.weight) and torch.count_nonzero(w[:, 16:]) == 0
    assert torch.equal(net.dit.head.head.weight, dit.head.head.weight)


def test_training_pt_errors_say_the_fix(tmp_path):
    dit = _randomised(build_wan("tiny"))
    pt = _training_pt(tmp_path / "model.pt", dit)
    with pytest.raises(CheckpointError, match=r"model.pt::<name>"):  # no entry named: say how to name one
        read_state_dict(pt)
    with pytest.raises(CheckpointError, match=r"no entry 'ema'.*generator_ema"):
        read_state_dict(pt, subkey="ema")
    net = build_motion_wan(ModelConfig(flavor="tiny", layout="t2v", track_channels=8), text_encoder_dim=TEXT_DIM)
    with pytest.raises(CheckpointError, match="no entry 'ema'"):
        initialise(net, init_from=f"{pt}::ema")
    folder = tmp_path / "official"
    from trackstream.models.wan_io import save_wan

    save_wan(dit, folder)
    with pytest.raises(CheckpointError, match="drop ::generator"):
        read_state_dict(folder, subkey="generator")
    # LongLive's adapter file: PEFT LoRA weights are deltas, not a network
    lora = {"base_model.model.blocks.0.self_attn.q.lora_A.weight": torch.zeros(4, 128)}
    torch.save({"generator_lora": lora, "critic_lora": lora}, tmp_path / "lora.pt")
    with pytest.raises(CheckpointError, match="LoRA adapter.*merge"):
        initialise(net, init_from=f"{tmp_path / 'lora.pt'}::generator_lora")


@pytest.mark.slow  # three whole stage commands
def test_a_self_forcing_pt_initialises_a_student_from_the_cli(tmp_path, run_module):
    """``model.init_from=PATH::generator_ema`` on the command line: the teacher-stage run's network
    starts from the EMA generator of a Self-Forcing-layout file, and the ODE-init stage's student,
    which starts as its ``stage.teacher``, carries those weights; the DMD stage takes the file directly
    (``stage.student=PATH::generator_ema``). A vanishing learning rate keeps the one training step of each
    run from moving them."""
    dit = _randomised(build_wan("tiny", num_heads=2, text_len=64))  # tiny_teacher's DiT shape
    pt = _training_pt(tmp_path / "self_forcing_dmd.pt", dit)
    common = ["debug=tiny", "optim.lr=1e-30", "ema.enabled=false", "trainer.max_steps=1", "trainer.num_threads=1"]
    imp, ode = tmp_path / "import", tmp_path / "ode"
    run_module(
        "trackstream.train",
        *common,
        "experiment=tiny_teacher",
        "model.layout=t2v",
        f"model.init_from={pt}::generator_ema",
        "eval.enabled=false",
        f"hydra.run.dir={imp}",
    )
    run_module(
        "trackstream.train",
        *common,
        "experiment=tiny_ode_init",
        f"stage.teacher={imp / 'export' / 'teacher'}",
        "stage.ode_pairs.num_pairs=2",
        "stage.ode_pairs.teacher_steps=3",
        "stage.ode_pairs.batch_size=2",
        f"hydra.run.dir={ode}",
    )
    # DMD straight from the file: stage.student=PATH::generator_ema puts its DiT into the teacher's network
    dmd = tmp_path / "dmd"
    run_module(
        "trackstream.train",
        "debug=tiny",
        "trainer.max_steps=1",
        "trainer.num_threads=1",
        "experiment=tiny_dmd",
        "stage.generator_optim.lr=1e-30",
        "stage.critic_optim.lr=1e-30",
        f"stage.teacher={imp / 'export' / 'teacher'}",
        f"stage.student={pt}::generator_ema",
        f"stage.pairs={ode / 'ode_pairs'}",
        f"hydra.run.dir={dmd}",
    )
    theirs = dit.state_dict()
    for export in (imp / "export" / "teacher", ode / "export" / "student", dmd / "export" / "student"):
        for k, v in load_network(export).dit.state_dict().items():
            if k == "patch_embedding.weight":  # the file's 16 latent channels, then the grown track channels
                assert torch.equal(v[:, :16], theirs[k]) and v[:, 16:].abs().max() < 1e-20, export
            else:
                assert torch.equal(v, theirs[k]), (export, k)

    r = run_module(
        "trackstream.train", "experiment=tiny_teacher", f"model.init_from={pt}::nope", "debug=tiny", check=False
    )
    assert r.returncode != 0 and "no entry 'nope'" in r.stderr
    r = run_module(
        "trackstream.train",
        "experiment=tiny_dmd",
        "debug=tiny",
        f"stage.teacher={imp / 'export' / 'teacher'}",
        f"stage.student={tmp_path / 'missing.pt'}::generator_ema",
        f"stage.pairs={ode / 'ode_pairs'}",
        f"hydra.run.dir={tmp_path / 'refused'}",
        check=False,
    )
    assert r.returncode != 0 and "stage.student=" in r.stderr and "missing.pt' does not exist" in r.stderr


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny exported network (the wan_i2v layout with 8 track channels: DiT in_dim 44), random weights, in the
    run directory docs/checkpoints.md's export lines name (``runs/x/export/student`` under the returned folder's
    parents[3])."""
    tmp = tmp_path_factory.mktemp("export")
    cfg = ModelConfig(flavor="tiny", layout="wan_i2v", track_channels=8, track_embed_dim=16)
    net = _randomised(build_motion_wan(cfg, text_encoder_dim=TEXT_DIM), seed=1)
    folder = tmp / "runs" / "x" / "export" / "student"
    save_network(net.state_dict(), folder, model_cfg=asdict(cfg), text_encoder_dim=TEXT_DIM, ema=False)
    return folder, net


@pytest.mark.slow
def test_diffusers_export_round_trips(exported, tmp_path):
    diffusers = pytest.importorskip("diffusers")
    folder, net = exported
    here = folder.parents[3]  # docs/checkpoints.md's line as written, where runs/x is
    run_documented(EXPORT_DIFFUSERS, here)
    out = here / "my-transformer"
    side = json.loads((out / "trackstream_network.json").read_text())
    assert side["dit_input"]["in_channels"] == 44 and side["model"]["layout"] == "wan_i2v"

    theirs = diffusers.WanTransformer3DModel.from_pretrained(out).eval()
    assert theirs.config.in_channels == 44
    B, F, H, W, L = 2, 3, 8, 8, net.dit.text_len
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(B, 16, F, H, W, generator=g), torch.randn(B, 28, F, H, W, generator=g)
    ctx, t = torch.randn(B, L, net.dit.text_dim, generator=g), torch.tensor([900.0, 250.0])
    with torch.no_grad():
        ours = net.dit(x, t, ctx, y=y)
        # diffusers takes the condition already concatenated after the latent (its pipelines do that)
        ref = theirs(hidden_states=torch.cat([x, y], 1), timestep=t, encoder_hidden_states=ctx, return_dict=False)[0]
    err = (ours - ref).abs().max().item()
    assert err <= 1e-5 and ref.abs().max() > 1e-2, f"max abs diff {err:.3e}"

    fresh = build_motion_wan(ModelConfig(**side["model"]), text_encoder_dim=side["text_encoder_dim"])
    initialise(fresh, init_from=str(out))  # DiT from the diffusers names, heads from the side file
    want = net.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in fresh.state_dict().items())


@pytest.mark.slow
def test_official_export_round_trips(exported, tmp_path):
    folder, net = exported
    out = tmp_path / "official"
    # a folder holding no network (the one runs/ is in) is refused before anything is written
    assert cli_main(["export", "--network", str(folder.parents[3]), "--format", "official", "--out", str(out)]) != 0
    assert cli_main(["export", "--network", str(folder), "--format", "official", "--out", str(out)]) == 0
    # docs/checkpoints.md's line as written: the run directory (runs/x) with its one export, the same files
    here = folder.parents[3]
    run_documented(EXPORT_OFFICIAL, here)
    for name in ("config.json", "diffusion_pytorch_model.safetensors"):
        assert (here / "my-wan" / name).read_bytes() == (out / name).read_bytes(), name
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["_class_name"] == "WanModel" and cfg["in_dim"] == 44
    dit = load_wan(out)  # the official loader's view: config.json + official key names
    assert all(torch.equal(a, b) for a, b in zip(dit.state_dict().values(), net.dit.state_dict().values()))
    fresh = build_motion_wan(
        ModelConfig(flavor="tiny", layout="wan_i2v", track_channels=8, track_embed_dim=16), text_encoder_dim=TEXT_DIM
    )
    initialise(fresh, init_from=str(out))
    want = net.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in fresh.state_dict().items())


@pytest.mark.slow
def test_export_refuses_bad_inputs_in_one_line(exported, tmp_path, capsys):
    folder, _ = exported
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    cases = [
        (
            ["--network", str(tmp_path), "--format", "diffusers", "--out", str(tmp_path / "o1")],
            "is not a network folder",
        ),
        (["--network", str(folder), "--format", "onnx", "--out", str(tmp_path / "o2")], "--format 'onnx'"),
        (["--network", str(folder), "--format", "official", "--out", str(tmp_path / "full")], "not an empty folder"),
        (
            ["--network", str(tmp_path / "nope"), "--format", "official", "--out", str(tmp_path / "o3")],
            "does not exist",
        ),
    ]
    for argv, words in cases:
        assert cli_main(["export", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and "\n" not in err and "Traceback" not in err, err
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_an_export_names_no_path_of_the_machine_that_trained_it(tmp_path):
    """Where training started (model.init_from, an adapter merged into it) is a path on the training machine: the
    export holds the whole network, so its network.json names neither; the shipped ones neither."""
    cfg = ModelConfig(flavor="tiny", init_from="/work/somewhere/teacher", adapter="/work/somewhere/adapter")
    net = build_motion_wan(ModelConfig(flavor="tiny"), text_encoder_dim=TEXT_DIM)
    save_network(net.state_dict(), tmp_path / "net", model_cfg=asdict(cfg), text_encoder_dim=TEXT_DIM, ema=False)
    model = json.loads((tmp_path / "net" / "network.json").read_text())["model"]
    assert model["init_from"] is None and model["adapter"] is None
    load_network(tmp_path / "net")  # and it loads as it is
    shipped = sorted((ROOT / "assets").glob("*/*/network.json"))
    assert shipped and not [p for p in shipped if "/work/" in p.read_text() or "/tmp/" in p.read_text()]
