"""TrackStream: real-time motion-controllable video generation (teacher -> causal student -> DragStream)."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def _reqs(name: str) -> list[str]:
    lines = (HERE / name).read_text().splitlines()
    return [ln.split("#")[0].strip() for ln in lines if ln.split("#")[0].strip()]


setup(
    name="trackstream",
    version="0.1.0",
    description="Hydra-configured PyTorch framework for real-time, motion-controllable video generation",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["trackstream", "trackstream.*"]),  # one top-level name, nothing else
    # Any range the local torch 2.13.0 CPU build satisfies: nothing newer (and its CUDA wheels)
    # is ever pulled. The Makefile also pins torch==2.13.0 through constraints.txt.
    package_data={"trackstream.stream.demo": ["static/*"]},  # the demo's page
    install_requires=["torch>=2.5,<=2.13.0"] + _reqs("requirements.txt"),
    extras_require={"dev": _reqs("requirements-dev.txt")},
    entry_points={"console_scripts": ["trackstream=trackstream.cli:main"]},
)
