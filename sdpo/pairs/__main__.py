"""``python -m sdpo.pairs out_dir=runs/pairs stage=all models.judge=gpt-4o ...`` (hydra overrides)."""
from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def main() -> None:
    from sotopia_env import cli

    from . import __doc__ as summary
    from .config import PairsConfig

    def task(config: PairsConfig) -> None:
        from .pipeline import PairPipeline, check_inputs

        if config.dry_run:
            from .dry_run import dry_run_report

            print(dry_run_report(config))
            return
        check_inputs(config)   # before out_dir is created
        PairPipeline(config).run()

    # The run's folder holds everything the run writes (config.yaml included); hydra writes no
    # folder or log of its own, so a refused start leaves nothing behind.
    cli.run("sdpo.pairs", PairsConfig, task, summary=summary or "", config_name="pairs",
            hydra_defaults=["hydra.run.dir=.", "hydra.output_subdir=null", "hydra/job_logging=none",
                            "hydra/hydra_logging=none"])


if __name__ == "__main__":
    main()
