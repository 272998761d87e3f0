"""``python -m sdpo.pairs out_dir=runs/pairs stage=all models.judge=gpt-4o ...`` (hydra overrides)."""
from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def main() -> None:
    from sotopia_env import cli

    from . import __doc__ as summary
    from .config import PairsConfig

    def task(config: PairsConfig) -> None:
        from .pipeline import PairPipeline

        PairPipeline(config).run()

    # Hydra's own log folder goes inside the run's folder rather than ./outputs.
    cli.run("sdpo.pairs", PairsConfig, task, summary=summary or "", config_name="pairs",
            hydra_defaults=["hydra.run.dir=${out_dir}/hydra"])


if __name__ == "__main__":
    main()
