"""The flags every flag-based command shares, spelled once: ``--student``, ``--codec`` / ``--codec-name``,
``--device`` / ``--dtype``, ``--tracker`` / ``--tracker-checkpoint`` / ``--tracker-device``.

    add_network_args(parser)                  # --student / --codec / --codec-name (the shipped ones by default)
    add_precision_args(parser)                # --device / --dtype
    device, dtype = parsed_precision(parser, args)

``--codec`` takes what ``codec.checkpoint`` takes (a weights file, a Wan release folder or a TrackStream
release folder such as assets/tiny-teacher) and ``--codec-name`` what ``codec.name`` takes (the names of
``conf/codec/``); ``--dtype`` the precisions of ``models.precision``. A bad value is the parser's
one-line usage error (exit 2) naming the flag, not a traceback from the first forward.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

import torch

from trackstream.data.trackers import TRACKERS, TrackerConfig, check_tracker_name
from trackstream.models.codec_names import codec_name
from trackstream.models.precision import PRECISION_HELP, precision_name, resolve_device, resolve_dtype

__all__ = [
    "SHIPPED_STUDENT",
    "add_codec_args",
    "add_network_args",
    "load_network_args",
    "open_student",
    "network_codec",
    "student_frame_size",
    "add_precision_args",
    "parsed_precision",
    "add_tracker_args",
    "tracker_config",
    "refuse",
]

# The shipped student (its recipe: assets/tiny-student/manifest.json): what every streaming command runs on when no
# --student is given. Its codec, as any network's, is read from its folder (models.network).
_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_STUDENT = _ROOT / "assets" / "tiny-student" / "student"


def _flag_type(check, flag: str):
    """An argparse ``type`` that runs ``check(value, field=flag)``: its ValueError is the usage error."""

    def parse(value: str) -> str:
        try:
            return check(value, field=flag)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = flag.lstrip("-")  # what argparse names in "invalid <type> value"
    return parse


def add_codec_args(parser: argparse.ArgumentParser, *, help_default: str = "") -> None:
    """--codec / --codec-name: the codec's weights and its name, as ``codec.checkpoint`` / ``codec.name``."""
    parser.add_argument(
        "--codec",
        default=None,
        help="the codec's weights: a file, a Wan release folder or a TrackStream release folder" + help_default,
    )
    parser.add_argument(
        "--codec-name",
        default=None,
        type=_flag_type(codec_name, "--codec-name"),
        help="the codec's name (conf/codec/: tiny-ae, wan2.1-vae, wan2.2-vae, taehv-wan2.1, taehv-wan2.2; "
        "default: the one the network's folder records)",
    )
    parser.add_argument(
        "--decoder",
        default=None,
        help="a trained tiny decoder (stage=tiny_decoder's export/taehv.pth, a taew2_1 / taew2_2 file) that decodes "
        "instead of the codec's own; the codec still encodes the first frame",
    )
    parser.add_argument(
        "--decoder-name",
        default=None,
        type=_flag_type(codec_name, "--decoder-name"),
        help="the decoder's codec name (default: the TAEHV of the codec's latent space: taehv-wan2.1 / taehv-wan2.2)",
    )


def add_network_args(parser: argparse.ArgumentParser) -> None:
    """--student / --codec / --codec-name (the shipped student by default; the codec its folder records by
    default) and --offload-encoders: what ``models.network.Network.for_inference`` takes."""
    parser.add_argument(
        "--student",
        default=str(SHIPPED_STUDENT),
        help="the student: a run directory, its export/<name>, a release folder or a WanTrack bundle; default: the "
        "shipped one, assets/tiny-student",
    )
    add_codec_args(
        parser,
        help_default=" (default: the one its folder records: a run's codec, a release's, a WanTrack bundle's vae/)",
    )
    parser.add_argument(
        "--offload-encoders",
        action="store_true",
        help="keep the text and image encoders on the CPU in fp32 (a GPU too small for umT5-XXL beside the DiT); "
        "default: on --device in --dtype",
    )


def add_tracker_args(parser: argparse.ArgumentParser, *, default: str | None) -> None:
    """--tracker / --tracker-checkpoint / --tracker-device: a ``data.trackers.TrackerConfig`` (its fields,
    as ``tracker.name`` / ``tracker.checkpoint`` / ``tracker.device`` of the Hydra commands)."""
    parser.add_argument(
        "--tracker",
        default=default,
        type=_flag_type(check_tracker_name, "--tracker"),
        help=f"{' | '.join(TRACKERS)} (default: {default or 'the command says'}; CoTracker3 with --tracker-checkpoint)",
    )
    parser.add_argument("--tracker-checkpoint", default=None, help="CoTracker3's local scaled_*.pth")
    parser.add_argument("--tracker-device", default="auto", help="CoTracker3's device (auto: CUDA when present)")


def tracker_config(args: argparse.Namespace) -> TrackerConfig:
    return TrackerConfig(name=args.tracker, checkpoint=args.tracker_checkpoint, device=args.tracker_device)


def refuse(message: str) -> NoReturn:
    """A command's refusal of a file or value: ``error: <message>`` on one line, exit status 2 (the parser's
    usage block is for a malformed command line, not for a bad file)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def open_student(args: argparse.Namespace):
    """The ``models.network.Network`` ``--student`` names; not a network folder is a one-line ValueError."""
    from trackstream.models.network import Network

    return Network.open(args.student, field="--student")


def network_codec(args: argparse.Namespace, network=None):
    """The ``CodecRef`` to load for ``--student``: its folder's own, or ``--codec`` / ``--codec-name`` where typed."""
    network = network or open_student(args)
    return network.codec_for(args.codec_name, args.codec, field="--codec")


def load_network_args(args: argparse.Namespace, device: torch.device, dtype: torch.dtype):
    """``Network.for_inference`` of ``add_network_args``' flags: (network, codec, conditioner)."""
    network = open_student(args)
    return network.for_inference(
        device=device,
        dtype=dtype,
        codec=network_codec(args, network),
        offload_encoders=args.offload_encoders,
        decoder=args.decoder,
        decoder_name=args.decoder_name,
    )


def student_frame_size(student: str) -> tuple[int, int] | None:
    """(height, width) a network streams at (its recorded conventions), read without loading it; None when it
    records no size. A folder that is not a network is a one-line ValueError."""
    from trackstream.models.network import Network

    conv = Network.open(student, field="--student").conventions
    return (conv.height, conv.width) if conv.height and conv.width else None


def add_precision_args(parser: argparse.ArgumentParser, *, dtype: str = "auto", device: str = "auto") -> None:
    """--device / --dtype with the project's defaults (resolve them with :func:`parsed_precision`)."""
    parser.add_argument("--device", default=device, help="auto (CUDA when present, else cpu), cpu, cuda, cuda:N")
    parser.add_argument("--dtype", default=dtype, type=_flag_type(precision_name, "--dtype"), help=PRECISION_HELP)


def parsed_precision(
    parser: argparse.ArgumentParser, args: argparse.Namespace, *, training: bool = False
) -> tuple[torch.device, torch.dtype]:
    """(device, dtype) of ``--device`` / ``--dtype``; ``training``: fp16 is refused (training has no fp16
    path). A bad value ends the command with the parser's one-line usage error naming the flag."""
    try:
        device = resolve_device(args.device, field="--device")
        precision_name(args.dtype, field="--dtype", training=training)
        return device, resolve_dtype(args.dtype, device, field="--dtype")
    except ValueError as err:
        parser.error(str(err))
