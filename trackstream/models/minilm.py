"""all-MiniLM-L6-v2 (a 6-layer BERT encoder) as a plain module, and its WordPiece tokenizer through ``tokenizers``.

The embedded default's text encoder is 22M parameters, but loading it through transformers' ``AutoModel`` imports
most of transformers (about 2 s of every stage process's start on a CPU core, more than a tiny stage's training
step). This is the same network: transformers' ``BertModel`` in evaluation (absolute positions, token type 0,
scaled-dot-product attention over the unpadded keys, exact GELU), reading the same ``config.json`` and
``model.safetensors`` in the checkpoint's dtype, as transformers 5 does; tests/test_text_encoders.py holds it equal
to transformers on the bundled weights, the pruned vocabulary and truncated texts.

Shapes: ids / mask [B, L] -> hidden [B, L, 384] (heads [B, 12, L, 32] inside attention).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["BertEncoder", "WordPieceTokenizer", "load_bert_folder"]


class _Layer(nn.Module):
    def __init__(self, dim: int, heads: int, ffn: int, eps: float):
        super().__init__()
        self.heads = heads
        self.attention = nn.ModuleDict(
            {
                "self": nn.ModuleDict({n: nn.Linear(dim, dim) for n in ("query", "key", "value")}),
                "output": nn.ModuleDict({"dense": nn.Linear(dim, dim), "LayerNorm": nn.LayerNorm(dim, eps=eps)}),
            }
        )
        self.intermediate = nn.ModuleDict({"dense": nn.Linear(dim, ffn)})
        self.output = nn.ModuleDict({"dense": nn.Linear(ffn, dim), "LayerNorm": nn.LayerNorm(dim, eps=eps)})

    def forward(self, x: torch.Tensor, keys: torch.Tensor | None) -> torch.Tensor:
        B, L, D = x.shape
        sa, out = self.attention["self"], self.attention["output"]
        # [B, L, D] -> [B, heads, L, D / heads]
        q, k, v = (sa[n](x).view(B, L, self.heads, -1).transpose(1, 2) for n in ("query", "key", "value"))
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=keys, scale=(D // self.heads) ** -0.5)
        a = out["LayerNorm"](out["dense"](a.transpose(1, 2).reshape(B, L, D)) + x)
        h = self.output["dense"](F.gelu(self.intermediate["dense"](a)))
        return self.output["LayerNorm"](h + a)


class BertEncoder(nn.Module):
    """BERT's embeddings and encoder (no pooler: the per-token last hidden states are what we use)."""

    def __init__(self, config: dict):
        super().__init__()
        if config.get("position_embedding_type", "absolute") != "absolute" or config.get("hidden_act") != "gelu":
            raise ValueError("config.json: only absolute positions and the exact GELU (BERT / MiniLM) are supported")
        dim, eps = int(config["hidden_size"]), float(config["layer_norm_eps"])
        self.config = dict(config)
        self.hidden_size, self.vocab_size = dim, int(config["vocab_size"])
        self.embeddings = nn.ModuleDict(
            {
                "word_embeddings": nn.Embedding(self.vocab_size, dim, padding_idx=config.get("pad_token_id", 0)),
                "position_embeddings": nn.Embedding(int(config["max_position_embeddings"]), dim),
                "token_type_embeddings": nn.Embedding(int(config["type_vocab_size"]), dim),
                "LayerNorm": nn.LayerNorm(dim, eps=eps),
            }
        )
        layer = (dim, int(config["num_attention_heads"]), int(config["intermediate_size"]), eps)
        self.encoder = nn.ModuleDict(
            {"layer": nn.ModuleList(_Layer(*layer) for _ in range(config["num_hidden_layers"]))}
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """ids, mask [B, L] -> last hidden states [B, L, hidden] (padded rows are computed, not zeroed)."""
        e = self.embeddings
        L = input_ids.shape[1]
        types = torch.zeros_like(input_ids)
        x = e["word_embeddings"](input_ids) + e["token_type_embeddings"](types)
        x = e["LayerNorm"](x + e["position_embeddings"](torch.arange(L, device=input_ids.device))[None])
        # padded keys masked ([B, 1, 1, L] booleans); no mask at all when nothing is padded, as transformers does
        keys = None if bool(attention_mask.all()) else attention_mask.bool()[:, None, None, :]
        for layer in self.encoder["layer"]:
            x = layer(x, keys)
        return x


def load_bert_folder(path: Path) -> BertEncoder:
    """``config.json`` + ``model.safetensors`` (a transformers BERT folder) -> a frozen ``BertEncoder`` in the file's
    dtype. The pooler and the position-id buffer in the file are not part of it; any other difference is an error."""
    from safetensors.torch import load_file

    path = Path(path)
    weights_file = path / "model.safetensors"
    if not weights_file.is_file():
        raise ValueError(
            f"{path}: no model.safetensors (a transformers BERT folder has config.json + model.safetensors)"
        )
    state = {
        k: v for k, v in load_file(weights_file).items() if not k.startswith(("pooler.", "embeddings.position_ids"))
    }
    state = {k.removeprefix("bert."): v for k, v in state.items()}
    # built on CPU (meta's init imports torch._refs, a second of start-up) with its random init drawn from a forked
    # generator: loading a frozen encoder leaves the caller's random stream where it was, as transformers' load does
    with torch.random.fork_rng(devices=[]):
        model = BertEncoder(json.loads((path / "config.json").read_text()))
    missing, unexpected = set(model.state_dict()) - set(state), set(state) - set(model.state_dict())
    if missing or unexpected:
        raise ValueError(
            f"{weights_file}: not a BERT encoder (missing {sorted(missing)[:4]}, unexpected {sorted(unexpected)[:4]})"
        )
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval().requires_grad_(False)


class WordPieceTokenizer:
    """The folder's ``tokenizer.json`` through ``tokenizers`` with a transformers-style call for ``TextEncoder``:
    ``tok(texts, padding="longest", truncation=True, max_length=N, add_special_tokens=True, return_tensors="pt")``
    -> {"input_ids", "attention_mask"} [B, L] (the file's own fixed padding / truncation replaced per call, as
    transformers' fast tokenizer does)."""

    def __init__(self, path: Path):
        from tokenizers import Tokenizer

        file = Path(path) / "tokenizer.json"
        if not file.is_file():
            raise ValueError(f"{path}: no tokenizer.json")
        self.tokenizer = Tokenizer.from_file(str(file))
        pad = self.tokenizer.padding or {}
        self.pad_id, self.pad_token = int(pad.get("pad_id", 0)), pad.get("pad_token", "[PAD]")
        self.unk_token_id = self.tokenizer.token_to_id("[UNK]")

    def convert_ids_to_tokens(self, ids) -> list[str]:
        return [self.tokenizer.id_to_token(int(i)) for i in ids]

    def __call__(
        self,
        texts,
        *,
        padding="longest",
        truncation=True,
        max_length: int,
        add_special_tokens=True,
        return_tensors="pt",
    ) -> dict[str, torch.Tensor]:
        assert padding == "longest" and truncation and return_tensors == "pt", "only the calls TextEncoder makes"
        tok = self.tokenizer
        tok.enable_truncation(max_length=max_length)
        tok.enable_padding(pad_id=self.pad_id, pad_token=self.pad_token)  # to the longest text of the batch
        enc = tok.encode_batch(list(texts), add_special_tokens=add_special_tokens)
        ids = torch.tensor([e.ids for e in enc], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": torch.tensor([e.attention_mask for e in enc], dtype=torch.long)}
