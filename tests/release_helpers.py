"""Fake Wan release folders for the tests: the product's rehearsal releases (``trackstream rehearsal-release``,
``trackstream/pipeline/rehearsal_release.py``) and the shrunk WanTrack bundles (``trackstream rehearsal-wantrack``),
re-exported under the names the tests use."""

from trackstream.pipeline.rehearsal_release import (  # noqa: F401
    RELEASE_CLIP,
    RELEASE_VAE,
    RELEASE_VAE22,
    TINY_CLIP,
    TINY_UMT5,
    tiny_t5_tokenizer,
    umt5_to_wan_keys,
    wan_clip_state,
    write_release_folder,
)
from trackstream.pipeline.rehearsal_wantrack import write_wantrack_bundle  # noqa: F401
