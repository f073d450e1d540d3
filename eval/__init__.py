"""Evaluator: the field's localisation metrics on cached test shards, baselines, pictures.

- The metric functions are in the core, ``htf.metrics`` (the trainer's validation uses them too).
- ``eval.runner.evaluate(model_or_baseline, shards, output_dir, cfg) -> dict``: in-process.
- ``python -m eval`` (``htf-eval``): the command line (``python -m apps.localize``: any video).
- ``eval.baselines``, ``eval.report``, ``eval.config`` (``EvalConfig``); the pictures are
  ``htf.pictures`` (the trainer draws validation heat maps with them too).

See docs/eval.md.
"""
