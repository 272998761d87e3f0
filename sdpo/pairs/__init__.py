"""Segment-level DPO pair building (the SDPO pipeline): collect judged sessions, pick negatives, locate
the error turn, sample positives from the history before it, select the segment, and write the
pair file; plus the baselines' data (DPO, ETO, DMPO, Preferred-SFT) and the ablations.

``python -m sdpo.pairs out_dir=runs/pairs stage=all`` runs every stage; ``stage=locate`` (etc.)
runs one. See ``sdpo.pairs.pipeline`` for the files a run writes.
"""
from .config import PairsConfig, Stage
from .pipeline import PairPipeline, format_summary

__all__ = ["PairPipeline", "PairsConfig", "Stage", "format_summary"]
