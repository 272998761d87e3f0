"""``python -m sdpo.pairs out_dir=runs/pairs stage=all models.judge=gpt-4o ...`` (hydra overrides)."""
from __future__ import annotations

import os
import sys

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import hydra
from omegaconf import DictConfig, OmegaConf

from .config import register

register()


@hydra.main(version_base=None, config_name="pairs")
def main(cfg: DictConfig) -> None:
    from .pipeline import PairPipeline

    config = OmegaConf.to_object(cfg)  # runs PairsConfig.__post_init__ validation
    PairPipeline(config).run()


if __name__ == "__main__":
    # Hydra's own log folder goes inside the run's folder rather than ./outputs.
    if not any(a.startswith("hydra.run.dir=") for a in sys.argv[1:]):
        sys.argv.append("hydra.run.dir=${out_dir}/hydra")
    main()
