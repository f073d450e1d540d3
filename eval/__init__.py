"""Evaluator: the field's localisation metrics on cached test shards, baselines, pictures.

- ``eval.metrics``: pure numpy metric functions (also used by the trainer's validation).
- ``eval.runner.evaluate(model_or_baseline, shards, output_dir, cfg) -> dict``: in-process.
- ``python -m eval`` (``htf-eval``): the command line; ``python -m eval.localize``: any video.
- ``eval.baselines``, ``eval.pictures``, ``eval.report``, ``eval.config`` (``EvalConfig``).

See docs/eval.md.
"""
