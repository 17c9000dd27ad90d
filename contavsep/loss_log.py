"""The loss terms of a step's iterations, summed on the device and read only when asked.

Calling ``float()`` or ``torch.isfinite(loss)`` in Python every iteration makes the host wait
for the device each time, so it can never queue the next iteration ahead. :class:`LossLog`
keeps, per set of term names, the running sums and the first iteration at which any term was
non-finite (with every term's value at that iteration) as device tensors; :meth:`check` and
:meth:`means` are the only reads (one device->host copy each), done at the logging interval and
at the end of the step. A non-finite loss is still reported with its step, its exact iteration
and the offending terms, just up to one logging interval later.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class _Tally:
    sums: torch.Tensor  # (K,) float64 (as Python floats would sum), sum over iterations of each term
    first_bad: torch.Tensor  # () int64, first iteration with a non-finite term, -1 if none
    at_bad: torch.Tensor  # (K,) float64, every term's value at that iteration


class LossLog:
    """Running sums of named loss terms on ``device``; no host sync until :meth:`check`/:meth:`means`."""

    def __init__(self, device: torch.device):
        self.device = device
        self._tallies: dict[tuple[str, ...], _Tally] = {}  # one per set of term names (usually one)

    def add(self, iteration: int, terms: dict[str, torch.Tensor]) -> None:
        """Add one iteration's terms (scalars, any dtype, with or without graph)."""
        names = tuple(terms)
        values = torch.stack([v.detach().reshape(()).float() for v in terms.values()]).double()
        tally = self._tallies.get(names)
        if tally is None:
            zeros = torch.zeros(len(names), dtype=torch.float64, device=values.device)
            tally = _Tally(zeros, torch.full((), -1, dtype=torch.int64, device=values.device), zeros.clone())
            self._tallies[names] = tally
        tally.sums += values
        newly = (~torch.isfinite(values)).any() & (tally.first_bad < 0)
        tally.first_bad.masked_fill_(newly, iteration)
        tally.at_bad = torch.where(newly, values, tally.at_bad)

    def check(self, where: str, iterations: str) -> None:
        """Raise ``FloatingPointError`` if a term was ever non-finite (one host sync).

        ``where`` names the step (e.g. ``"step 2"``), ``iterations`` the range checked since the
        last check (e.g. ``"40..59"``), both only for the message.
        """
        if not self._tallies:
            return
        firsts = torch.stack([t.first_bad for t in self._tallies.values()]).tolist()
        bad = [(first, names, t) for first, (names, t) in zip(firsts, self._tallies.items()) if first >= 0]
        if not bad:
            return
        first, names, tally = min(bad, key=lambda item: item[0])
        values = dict(zip(names, tally.at_bad.tolist()))
        offending = [n for n, v in values.items() if not torch.isfinite(torch.tensor(v))]
        raise FloatingPointError(
            f"{where}: non-finite loss at iteration {first} (checked over iterations {iterations}): "
            + ", ".join(f"{n} {v:.4g}" for n, v in values.items())
            + f"; non-finite: {', '.join(offending)}; lower the learning rates or the strategy weights"
        )

    def means(self, iterations: int) -> dict[str, float]:
        """Each term's sum over the iterations so far divided by ``iterations`` (one host sync)."""
        out: dict[str, float] = {}
        if not self._tallies:
            return out
        sums = torch.cat([t.sums for t in self._tallies.values()]).tolist()
        names = [n for key in self._tallies for n in key]
        for name, value in zip(names, sums):
            out[name] = out.get(name, 0.0) + value / max(1, iterations)
        return out
