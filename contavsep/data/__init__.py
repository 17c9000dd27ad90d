"""Datasets of audio-visual clips: the Arrow format, its writer and reader, and the synthetic benchmark.

One row per clip (``schema.py``); Parquet parts partitioned by split plus a ``manifest.json``
written last (``writer.py``, ``manifest.py``); a node-local memory-mapped Arrow IPC cache shared by
all trials on a node (``reader.py``); an offline stand-in for MUSIC-21 (``synth.py`` with
``instruments.py``, ``score.py``, ``additive.py``, ``soundfont.py``, ``visual_sim.py``).
"""
