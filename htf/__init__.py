"""The core every part shares; it imports nothing of pipeline/, train/, eval/ or apps/.

Typed config loading (``htf.config``), the shard sample contract (``htf.sample``), the
model, its config and loss (``htf.model``, ``htf.model_config``, ``htf.loss``), the metrics
(``htf.metrics``), the heat-map pictures (``htf.pictures``), the evaluation-time input
preparation (``htf.inputs``) and what every command line shares (``htf.cli``).
"""
