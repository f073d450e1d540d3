"""Applications on top of the parts: each may use the core (``htf``), ``pipeline``, ``train``
and ``eval``; nothing below imports them.

- ``python -m apps.synth`` (``htf-synth``): the synthetic world (videos with sound and boxes).
- ``python -m apps.localize`` (``htf-localize``): a checkpoint's heat maps on any video file.
- ``python -m apps.demo`` (``htf-demo``, ``make demo``): world -> shards -> train -> eval.
- ``python -m apps.demo_real`` (``make demo-real``): the same pipeline and localize on real clips.
"""
