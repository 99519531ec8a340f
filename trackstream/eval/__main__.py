"""``python -m trackstream.eval key=value ...``: score runs on a benchmark (trackstream/eval/command.py, conf/eval.yaml)."""

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    from trackstream.eval.command import EvalCommandConfig, evaluate

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s", datefmt="%H:%M:%S")
    raw = OmegaConf.to_container(cfg, resolve=True)
    data = raw.pop("data")
    raw.pop("paths", None)
    evaluate(EvalCommandConfig(**raw), data=data)


if __name__ == "__main__":
    main()
