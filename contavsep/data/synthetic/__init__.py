"""The offline stand-in for MUSIC-21 (``synth``): ``instruments``, their ``score``, ``additive`` and ``soundfont`` synthesis, ``recording`` effects, ``visual_sim`` features."""
