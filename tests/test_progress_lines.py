"""data.progress: a tqdm bar on a terminal, plain whole lines (no carriage returns) at most every N seconds
elsewhere, with a first line at the start and a last one at close; the training bar and the ODE pair shards use it."""

import io
import logging
import sys

import pytest

from trackstream.data.progress import LineProgress, progress_bar


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_lines_off_a_terminal_are_whole_rate_limited_with_a_first_and_a_last_line():
    out, clock = io.StringIO(), Clock()
    bar = LineProgress(total=100, desc="train", file=out, every_s=30, clock=clock)
    for t in (10, 20, 31, 40, 50, 62):
        clock.t = t
        bar.update(10)
        bar.set_postfix({"loss": 0.123}, refresh=False)
    assert out.getvalue().count("\n") == 3  # at the start, 31 s and 62 s only
    clock.t = 70
    bar.close()
    bar.close()  # once
    text = out.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    assert len(lines) == 4
    assert lines.pop(0) == "train: 0/100 (0%) | 0s elapsed"
    assert lines[0] == "train: 30/100 (30%) | 1.03 s/it | 31s elapsed | eta 1m12s | loss=0.123"
    assert lines[1].startswith("train: 60/100 (60%) | 1.03 s/it | 1m02s elapsed | eta 41s")
    assert lines[2].startswith("train: 60/100 (60%) | 1m10s elapsed | loss=0.123")  # no steps since: no rate


def test_a_resumed_count_sets_the_rate_from_where_it_resumed():
    out, clock = io.StringIO(), Clock()
    bar = LineProgress(total=1000, desc="train", file=out, every_s=30, clock=clock)
    bar.n = bar.last_print_n = 500  # as MetricLogger.start_at does
    bar.refresh()
    clock.t = 40
    bar.update(20)
    assert out.getvalue().splitlines()[1:] == ["train: 520/1000 (52%) | 2.00 s/it | 40s elapsed | eta 16m00s"]


def test_iteration_reset_and_disable():
    out = io.StringIO()
    assert list(progress_bar(range(5), file=out, desc="inception", unit="batch")) == list(range(5))
    assert [line.split(" | ")[0] for line in out.getvalue().splitlines()] == [
        "inception: 0/5 (0%)",
        "inception: 5/5 (100%)",
    ]
    out = io.StringIO()
    bar = progress_bar(total=1, desc="teacher   ", file=out, every_s=0, bar_format="{desc}", dynamic_ncols=True)
    bar.reset(total=8)
    bar.n = 4
    bar.set_postfix_str("train loss 0.5000")
    assert out.getvalue().splitlines()[-1].startswith("teacher: 4/8 (50%)")
    assert out.getvalue().rstrip().endswith("train loss 0.5000")
    quiet = io.StringIO()
    bar = progress_bar(total=3, file=quiet, disable=True, every_s=0)
    bar.update(3)
    bar.close()
    assert quiet.getvalue() == ""


def test_a_terminal_gets_a_tqdm_bar():
    from tqdm import tqdm

    term = Terminal()
    bar = progress_bar(total=3, desc="train", file=term, mininterval=0)
    assert isinstance(bar, tqdm)
    bar.update(3)
    bar.close()
    assert "\r" in term.getvalue() and "3/3" in term.getvalue()
    assert isinstance(progress_bar(total=3, file=io.StringIO()), LineProgress)


def test_a_negative_interval_is_refused():
    with pytest.raises(ValueError, match="every_s"):
        LineProgress(total=3, every_s=-1)


def test_the_training_bar_in_a_log_file_has_no_carriage_returns(tmp_path, monkeypatch):
    from trackstream.trainer.metrics import LoggerConfig, MetricLogger

    with open(tmp_path / "job.out", "w") as err:
        monkeypatch.setattr(sys, "stderr", err)
        logger = MetricLogger(tmp_path / "run", LoggerConfig(progress_bar=True), is_main=True, total_steps=20)
        logger.start_at(5)
        for step in range(6, 21):
            logger.log(step, {"train/loss": 1.0 / step})
            logger.advance()
        logger.close()
    text = (tmp_path / "job.out").read_text()
    assert "\r" not in text
    assert text.splitlines()[-1].startswith("train: 20/20 (100%)") and "loss=0.05" in text


def test_an_ode_pair_shard_logs_its_progress(monkeypatch, caplog):
    from trackstream.distill import ode_pairs

    def fake_batch(s, batch, idx, parts):
        parts.setdefault("seed", []).extend(idx)

    def conditions(idx):
        return {}

    monkeypatch.setattr(ode_pairs, "_sample_batch", fake_batch)
    with caplog.at_level(logging.INFO, logger=ode_pairs.log.name):
        parts = ode_pairs._sample_shard(None, conditions, list(range(10)), 4, name="pairs_00000.safetensors", every_s=0)
        assert parts == {"seed": list(range(10))}  # what is sampled does not change
        quiet = ode_pairs._sample_shard(None, conditions, list(range(10)), 4, name="pairs_00001.safetensors")
    assert quiet == parts
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(" | ")[0] for line in lines] == [
        "ODE pairs: pairs_00000.safetensors: 0/10 (0%)",
        "ODE pairs: pairs_00000.safetensors: 4/10 (40%)",
        "ODE pairs: pairs_00000.safetensors: 8/10 (80%)",
        "ODE pairs: pairs_00000.safetensors: 10/10 (100%)",
        "ODE pairs: pairs_00001.safetensors: 0/10 (0%)",  # then nothing within 30 s
    ]
