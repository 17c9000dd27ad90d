"""Visually guided separators: a spectrogram mixture and per-source visual cues in, masks out.

- :mod:`contavsep.models.iquery` -- the paper's base (iQuery): U-Net + audio-visual transformer
  with one learnable query per seen class.
- :mod:`contavsep.models.coseparation` -- a Co-Separation-style U-Net conditioned on the object
  feature at its bottleneck.
- :mod:`contavsep.models.build` -- ``build_model`` (by name, through the registry) and
  ``load_weights``.

Every separator returns a :class:`contavsep.models.output.SeparatorOutput`.
"""
