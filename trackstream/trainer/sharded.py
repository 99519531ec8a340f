"""Reading an FSDP network's sharded checkpoint so that a damaged file falls back like any other.

``<network>/`` is written by torch.distributed.checkpoint (DCP): an index ``.metadata`` and one
``__<rank>_0.distcp`` per writing rank, each a run of ``torch.save``'d items at offsets the index
records. DCP gathers a failure on any rank into a ``CheckpointException`` raised on every rank, but
it says neither whether the files are damaged nor which one. :func:`load_sharded` asks that after the
fact (nothing is checked on the way in, so a whole checkpoint costs nothing extra): the files
are looked at (:func:`sharded_damage`), the ranks agree on what they found, and a damaged file is an
:class:`UnreadableFile` on every rank (resume then goes back one checkpoint); with every file whole the
failure is DCP's own answer (a missing key, another shape) and is raised as is.

Every rank must reach every collective of a load: a rank that failed to read a file of its own must not
leave the others waiting inside DCP. :func:`agree_readable` is where ranks meet before one.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import torch
import torch.distributed as dist

from trackstream.models.formats.files import UnreadableFile, one_line
from trackstream.trainer.dist import Runtime

__all__ = ["agree_readable", "load_sharded", "sharded_damage"]


def _first_reason(runtime: Runtime, reason: str | None) -> str | None:
    """``reason`` of the lowest rank that has one, the same on every rank (None if no rank has one)."""
    if not runtime.distributed:
        return reason
    reasons: list = [None] * runtime.world_size
    dist.all_gather_object(reasons, reason)
    return next((f"rank {r}: {why}" for r, why in enumerate(reasons) if why is not None), None)


def agree_readable(runtime: Runtime, reason: str | None) -> None:
    """Collective: if any rank could not read its files (``reason`` says why on that rank), raise an
    :class:`UnreadableFile` on every rank, each naming its own reason or else the first rank's."""
    first = _first_reason(runtime, reason)
    if first is not None:
        raise UnreadableFile(reason or first)


def sharded_damage(directory: Path, *, rank: int = 0, world_size: int = 1) -> str | None:
    """Why the DCP checkpoint ``directory`` cannot be read, naming the file (None if its files are whole).
    The index and every file's presence and size are checked on every rank; the items' bytes (the whole
    checkpoint) are read once in all, each file by one rank (``rank`` of ``world_size``)."""
    from torch.distributed.checkpoint import FileSystemReader

    directory = Path(directory)
    index = directory / ".metadata"
    if not index.is_file():
        return f"{index} does not exist (the index of a sharded checkpoint)"
    try:
        metadata = FileSystemReader(str(directory)).read_metadata()  # as dcp.load reads it
    except MemoryError:
        raise
    except Exception as err:  # noqa: BLE001 -- an index that does not unpickle is the file's fault
        return f"{index} is truncated or garbage ({type(err).__name__}: {one_line(err)})"
    items: dict[str, list] = {}
    for info in metadata.storage_data.values():
        items.setdefault(info.relative_path, []).append(info)
    for name, infos in sorted(items.items()):
        path, end = directory / name, max(i.offset + i.length for i in infos)
        if not path.is_file():
            return f"{path} does not exist (a shard of this checkpoint)"
        if path.stat().st_size < end:
            return f"{path} is truncated ({path.stat().st_size} bytes, its index needs {end})"
    for name, infos in sorted(items.items())[rank::world_size]:
        with open(directory / name, "rb") as f:
            for info in infos:
                if info.transform_descriptors:  # an extension's encoding (not written here): not ours to parse
                    continue
                f.seek(info.offset)
                try:
                    torch.load(io.BytesIO(f.read(info.length)), map_location="cpu", weights_only=True)
                except MemoryError:
                    raise
                except pickle.UnpicklingError as err:
                    if "Unsupported global" not in str(err):  # a class refused is a whole item, not garbage
                        return f"{directory / name} holds garbage at byte {info.offset} (not a torch item)"
                except Exception as err:  # noqa: BLE001 -- bytes that do not parse are the file's fault
                    return f"{directory / name} holds garbage at byte {info.offset} ({type(err).__name__})"
    return None


def load_sharded(state: dict, directory: Path, runtime: Runtime) -> None:
    """``dcp.load(state)`` in place; a damaged file of it is an :class:`UnreadableFile` on every rank (see the
    module docstring). ``state``'s tensors may be half-filled then: the caller loads them wholly again."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    try:
        dcp.load(state, checkpoint_id=str(directory))  # resharding if the world size changed
        return
    except CheckpointException as err:  # raised on every rank, so every rank meets in agree_readable
        failure = err
    agree_readable(runtime, sharded_damage(directory, rank=runtime.rank, world_size=runtime.world_size))
    raise failure  # every file whole: DCP's own refusal, as is
