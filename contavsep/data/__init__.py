"""Datasets of audio-visual clips, in four groups:

- ``format``: one Arrow row per clip (``schema``); Parquet parts partitioned by split plus a
  ``manifest.json`` written last (``writer``, ``manifest``); a node-local memory-mapped Arrow
  IPC cache shared by all trials on a node (``reader``);
- ``sampling``: training mixtures (``mixtures``), the fixed test and validation sets
  (``evaluation_set``), batches prepared ahead of the training thread (``batch_producer``);
- ``ingest``: MUSIC-21 videos to a dataset (``pipeline``, ``media``, ``extractors``) on the
  paper's ``splits``;
- ``synthetic``: an offline stand-in for MUSIC-21 (``synth`` with ``instruments``, ``score``,
  ``additive``, ``soundfont``, ``recording``, ``visual_sim``).
"""
