"""One precision vocabulary (``bf16 | fp16 | fp32 | auto``) on every path, and the rule "auto = bf16 on CUDA,
fp32 on the CPU" written once (``models.precision.auto_precision``)."""

import argparse
import re
from pathlib import Path

import pytest
import torch

from trackstream.models.precision import (
    PRECISION_HELP,
    PRECISIONS,
    auto_precision,
    concrete_precision,
    precision_name,
    resolve_dtype,
)

ROOT = Path(__file__).resolve().parents[1]


def test_the_vocabulary_and_its_aliases():
    assert PRECISIONS == ("bf16", "fp16", "fp32", "fp8", "auto")
    for alias, name in (("bfloat16", "bf16"), ("float16", "fp16"), ("float32", "fp32"), (None, "auto")):
        assert precision_name(alias) == name
    assert precision_name(torch.bfloat16) == "bf16"
    assert (auto_precision("cpu"), auto_precision(torch.device("cuda"))) == ("fp32", "bf16")
    assert resolve_dtype("auto", "cpu") == torch.float32 and resolve_dtype("fp16", "cpu") == torch.float16
    assert concrete_precision("auto", "cuda", training=True) == "bf16"
    with pytest.raises(ValueError) as err:
        precision_name("fp4", field="--dtype")
    msg = str(err.value)
    assert msg == f"--dtype='fp4': choose {PRECISION_HELP}" and "bfloat16" not in msg and "\n" not in msg
    with pytest.raises(ValueError, match="trainer.precision=.fp16.: .*training has no fp16 or fp8 path"):
        precision_name("fp16", field="trainer.precision", training=True)


def test_every_entry_point_takes_the_one_spelling():
    from trackstream.distill.ode_pairs import ODEPairsConfig
    from trackstream.eval.generate import GenerateConfig
    from trackstream.stream.options import add_precision_args, parsed_precision
    from trackstream.trainer.loop import TrainerConfig

    assert TrainerConfig(precision="bfloat16").precision == "bf16"  # an alias, normalised at the entry
    with pytest.raises(ValueError, match="trainer.precision='fp16'"):
        TrainerConfig(precision="fp16")
    assert GenerateConfig(dtype="float16").dtype == "fp16"
    assert ODEPairsConfig(dtype="bf16", sample_dtype="float32").sample_dtype == "fp32"
    with pytest.raises(ValueError, match="ode_pairs.dtype=auto"):
        ODEPairsConfig(dtype="auto")
    ap = argparse.ArgumentParser()
    add_precision_args(ap)
    assert "bfloat16" not in ap.format_help() and "bf16" in ap.format_help()
    args = ap.parse_args(["--device", "cpu", "--dtype", "bfloat16"])
    assert args.dtype == "bf16" and parsed_precision(ap, args) == (torch.device("cpu"), torch.bfloat16)
    with pytest.raises(SystemExit):
        parsed_precision(ap, ap.parse_args(["--device", "cpu", "--dtype", "fp16"]), training=True)


def test_the_prepare_cache_takes_the_precisions_numpy_stores():
    from trackstream.data.prepare_shards import PrepareConfig

    for given in ("fp16", "float16"):  # one fingerprint whichever spelling: a resumed prepare matches
        cfg = PrepareConfig(input="in", output="out", cache_dtype=given)
        assert cfg.cache_dtype == "fp16" and cfg.content_fingerprint()["cache_dtype"] == "float16"
    with pytest.raises(ValueError, match="cache_dtype='bf16': the cache is stored by numpy; choose fp16 or fp32"):
        PrepareConfig(input="in", output="out", cache_dtype="bf16")


def test_the_auto_rule_is_written_once():
    """No other module decides bf16-on-CUDA itself: a conditional choosing a precision from the device type
    (``"bf16" if ... cuda``, ``torch.bfloat16 if ... cuda``) appears only in models/precision.py."""
    rule = re.compile(r"""(["']b(?:f16|float16)["']|torch\.bfloat16)\s+if\b[^\n]*cuda""")
    found = [
        str(p.relative_to(ROOT))
        for p in sorted((ROOT / "trackstream").rglob("*.py"))
        if rule.search(p.read_text()) and p.name != "precision.py"
    ]
    assert found == []
    assert rule.search((ROOT / "trackstream" / "models" / "precision.py").read_text())
