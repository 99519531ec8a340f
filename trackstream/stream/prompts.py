"""Prompt schedules: ``trackstream generate --prompt-schedule FILE``, the prompt switched mid-stream.

The file is UTF-8 text, one switch a line, ``frame<TAB>prompt``::

    0	a red ball on a table
    40	the ball turns blue

``frame`` is the pixel frame from which the prompt applies: it takes effect at the first chunk whose pixel
range starts at or after it (a chunk is generated under one prompt). Frame 0 (line 1 only, since frames
increase) sets the initial prompt in place of ``--prompt``. Blank lines are skipped. Each later switch
re-caches the KV cache under the new prompt (``StreamingGenerator.switch_prompt``, ``stream.recache``).

The file is read and checked before the network is loaded (``read_prompt_schedule``) and its frames against
the video once the chunking is known (``place_switches``): a bad line is a one-line ValueError naming the
file and the line.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch

from trackstream.models.precision import synchronize
from trackstream.models.streaming import CausalConfig
from trackstream.stream.chunks import chunk_pixel_frames

__all__ = ["PromptSwitch", "read_prompt_schedule", "place_switches", "scheduled_stream"]


@dataclass(frozen=True)
class PromptSwitch:
    frame: int  # pixel frame from which the prompt applies
    prompt: str
    line: int  # 1-based line of the schedule file (for messages)
    chunk: Optional[int] = None  # the chunk it lands on (``place_switches``)


def read_prompt_schedule(path) -> list[PromptSwitch]:
    """The switches of a schedule file, in order; the file's format checked (see the module docstring)."""
    name = f"--prompt-schedule {path}"
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as err:
        raise ValueError(f"{name}: cannot be read ({err.strerror or err}); give a text file of frame<TAB>prompt lines")
    except UnicodeDecodeError as err:
        raise ValueError(f"{name}: not UTF-8 text (byte {err.start}); save it as UTF-8") from None
    switches: list[PromptSwitch] = []
    for n, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{name}:{n}"
        if "\t" not in raw:
            raise ValueError(f"{where}: no tab; each line is frame<TAB>prompt, e.g. '40\\ta dog runs'")
        head, prompt = raw.split("\t", 1)
        try:
            frame = int(head.strip())
        except ValueError:
            raise ValueError(f"{where}: frame {head.strip()!r} is not an integer pixel frame index") from None
        if frame < 0:
            raise ValueError(f"{where}: frame {frame} is negative; frames count from 0 (the image)")
        if not prompt.strip():
            raise ValueError(f"{where}: empty prompt after the tab; write the prompt, or drop the line")
        if switches and frame <= switches[-1].frame:
            raise ValueError(
                f"{where}: frame {frame} does not come after line {switches[-1].line}'s frame "
                f"{switches[-1].frame}; frames must increase down the file"
            )
        switches.append(PromptSwitch(frame, prompt.strip(), n))
    if not switches:
        raise ValueError(f"{name}: no frame<TAB>prompt line; give at least one, or drop --prompt-schedule")
    return switches


def place_switches(switches: list[PromptSwitch], causal: CausalConfig, num_chunks: int, path) -> list[PromptSwitch]:
    """Each switch with the chunk it lands on: the first whose pixel range starts at or after its frame.
    A frame after the last chunk's start (it would never apply) and two switches landing on the same chunk
    (the first would never be seen) are refused."""
    starts = [chunk_pixel_frames(causal, i)[0] for i in range(num_chunks)]
    end = chunk_pixel_frames(causal, num_chunks - 1)[1]
    placed: list[PromptSwitch] = []
    for s in switches:
        chunk = next((i for i, lo in enumerate(starts) if lo >= s.frame), None)
        if chunk is None:
            raise ValueError(
                f"--prompt-schedule {path}:{s.line}: frame {s.frame} is beyond the video ({num_chunks} chunks, frames "
                f"0-{end - 1}; the last chunk starts at frame {starts[-1]}): stream more chunks (--chunks) or drop it"
            )
        if placed and placed[-1].chunk == chunk:
            raise ValueError(
                f"--prompt-schedule {path}:{s.line}: frame {s.frame} lands on chunk {chunk} (frames {starts[chunk]}-"
                f"{chunk_pixel_frames(causal, chunk)[1] - 1}) like line {placed[-1].line}; one prompt per chunk: "
                "move one of them"
            )
        placed.append(PromptSwitch(s.frame, s.prompt, s.line, chunk))
    return placed


def scheduled_stream(
    engine,
    state,
    source,
    num_chunks: int,
    switches: dict,
    *,
    sink: str = "recache",
    on_switch: Optional[Callable[[int, int, float], None]] = None,
) -> Iterator:
    """``engine.stream`` of ``num_chunks`` chunks with the prompt switched before each chunk of ``switches``
    ({chunk: (text [B, L, E], lengths [B])}, chunks > 0); ``on_switch(chunk, passes, seconds)`` hears each
    re-cache (synchronised wall time). Yields the chunks; returns the final state."""
    done = 0
    for stop in sorted(c for c in switches if 0 < c < num_chunks) + [num_chunks]:
        state = yield from engine.stream(state, source, num_chunks=stop - done)
        done = stop
        if stop < num_chunks:
            synchronize(engine.device)
            t0, nfe = time.perf_counter(), state.nfe
            with torch.no_grad():
                state = engine.switch_prompt(state, *switches[stop], sink=sink)
            synchronize(engine.device)
            if on_switch is not None:
                on_switch(stop, state.nfe - nfe, time.perf_counter() - t0)
    return state
