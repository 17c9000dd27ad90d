"""Running a separator on part of a training batch: what distilling strategies share.

A distilling strategy runs the frozen old model itself (``ctx.old_model``, under ``no_grad``) on
exactly the sources it needs, because only it knows which sources the old model can query: the
old iQuery model holds the class queries of the previous step only (labels
``< old_model.num_classes``). This module builds those restricted batches.

Both separators compute each source's mask, features and attention from its mixture and its own
conditioning alone (the U-Net encodes the mixture; an iQuery source attends with its own queries;
a Co-Separation source decodes with its own object feature), so running a source as a
one-source mixture gives the same outputs (in eval mode) as running it inside its full mixture.
``tests/contavsep/test_strategies.py`` checks this.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from contavsep.audio import MixtureSpectra
from contavsep.data.sampling.mixtures import MixtureBatch
from contavsep.models.output import SeparatorOutput
from contavsep.models.separator import Separator
from contavsep.step_batch import StepBatch
from contavsep.strategies.base import StepContext


def select_sources(batch: StepBatch, flags: torch.Tensor) -> StepBatch:
    """The flagged sources of ``batch`` as ``S`` one-source mixtures, in row-major order of ``flags``.

    Each selected source keeps its mixture's network input, loss weight and STFT, and its own
    clip fields and mask target; this is the order in which
    :func:`contavsep.losses.mask_distillation_loss` and
    :func:`contavsep.losses.attention_distillation` expect preselected old-model values.

    Shape:
        - batch: ``B`` mixtures of ``N`` sources
        - flags: :math:`(B, N)` bool
        - output: ``S = flags.sum()`` mixtures of 1 source (clip fields :math:`(S, 1, ...)`,
          mix_input and weight :math:`(S, 1, F, T)`, target_masks :math:`(S, 1, F, T)`)
    """
    clips, spectra = batch.clips, batch.spectra
    if flags.dtype != torch.bool or flags.shape != clips.labels.shape:
        raise ValueError(
            f"flags must be a bool {tuple(clips.labels.shape)} tensor, got {flags.dtype} {tuple(flags.shape)}"
        )
    flags = flags.to(clips.labels.device)
    mixture_index = flags.nonzero()[:, 0]  # (S,) the mixture of each selected source
    selected_clips = MixtureBatch(
        **{f.name: getattr(clips, f.name)[flags].unsqueeze(1) for f in dataclasses.fields(clips)}
    )
    selected_spectra = MixtureSpectra(
        mix_input=spectra.mix_input[mixture_index],
        target_masks=spectra.target_masks[flags].unsqueeze(1),
        weight=spectra.weight[mixture_index],
        mix_spec=spectra.mix_spec[mixture_index],
    )
    return StepBatch(clips=selected_clips, spectra=selected_spectra)


def with_labels(batch: StepBatch, labels: torch.Tensor) -> StepBatch:
    """``batch`` with every source queried by ``labels`` instead of its own class.

    Shape:
        - labels: :math:`(B, N)` integer, the shape of ``batch.clips.labels``
    """
    if labels.shape != batch.clips.labels.shape:
        raise ValueError(f"labels must be {tuple(batch.clips.labels.shape)}, got {tuple(labels.shape)}")
    return StepBatch(clips=dataclasses.replace(batch.clips, labels=labels), spectra=batch.spectra)


def reads_class_ids(model: nn.Module) -> bool:
    """Whether ``model`` conditions on the class id (it has one query per class, as iQuery).

    Co-Separation ignores class ids, so its old model can run on a source of any class.
    """
    return isinstance(getattr(model, "class_queries", None), torch.Tensor)


def known_to(model: Separator, labels: torch.Tensor) -> torch.Tensor:
    """Which sources ``model`` can be asked to separate: all, or those with a query.

    Shape:
        - labels: :math:`(B, N)` integer
        - output: :math:`(B, N)` bool
    """
    if not reads_class_ids(model):
        return torch.ones_like(labels, dtype=torch.bool)
    return labels < model.num_classes


def old_outputs_on(
    ctx: StepContext, batch: StepBatch, flags: torch.Tensor, return_internals: bool = False
) -> SeparatorOutput | None:
    """The frozen old model's outputs on the flagged sources (no graph); None if there are none.

    None at step 0 (no old model) and when nothing is flagged, so a batch without memory
    sources never runs the old model.

    Shape:
        - flags: :math:`(B, N)` bool
        - output: :class:`SeparatorOutput` of ``S = flags.sum()`` one-source mixtures
          (masks :math:`(S, 1, F, T)`, features :math:`(S, 1, D_f)`, attention :math:`(S, 1, H, L)`)
    """
    if ctx.old_model is None or not bool(flags.any()):
        return None
    with torch.no_grad():
        return ctx.forward(ctx.old_model, select_sources(batch, flags), return_internals)


def memory_flags(batch: StepBatch, ctx: StepContext) -> torch.Tensor:
    """The memory sources the old model teaches: ``is_memory``, or none at step 0 (no old model).

    Shape: :math:`(B, N)` bool.
    """
    if ctx.old_model is None:
        return torch.zeros_like(batch.clips.is_memory, dtype=torch.bool)
    return batch.clips.is_memory.to(torch.bool)
