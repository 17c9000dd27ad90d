"""The separator contract: what the engine and the strategies rely on, as a base class.

Both registered separators (:mod:`contavsep.models.iquery`, :mod:`contavsep.models.coseparation`)
derive from :class:`Separator`. It holds no parameters, so state_dicts and checkpoints are those
of the concrete models. Being an ``nn.Module`` subclass rather than a Protocol, it types the
module's own methods (``to``, ``state_dict``...) and the contract's together.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor, nn

from contavsep.models.output import SeparatorOutput
from contavsep.models.unet import UNet


class Separator(nn.Module):
    """A class-conditioned audio-visual separator whose class set grows step by step.

    ``unet`` is the spectrogram U-Net (trained with Adam); everything else is the head (AdamW).
    """

    unet: UNet

    @property
    def num_classes(self) -> int:
        """Number of classes the model can be asked to separate (classes seen so far)."""
        raise NotImplementedError

    def expand_classes(self, new_total: int) -> None:
        """Grow to ``new_total`` classes, keeping the old ones (an optimizer built before must be rebuilt)."""
        raise NotImplementedError

    def unet_parameters(self) -> list[nn.Parameter]:
        """Parameters of the U-Net (trained with Adam)."""
        return list(self.unet.parameters())

    def head_parameters(self) -> list[nn.Parameter]:
        """Every parameter outside the U-Net (AdamW)."""
        unet = {id(p) for p in self.unet.parameters()}
        return [p for p in self.parameters() if id(p) not in unet]

    if TYPE_CHECKING:  # nn.Module.__call__ runs forward; this only tells the type checker what it returns

        def __call__(
            self,
            mix_input: Tensor,
            class_ids: Tensor,
            object_features: Tensor,
            motion_features: Tensor,
            return_internals: bool = False,
        ) -> SeparatorOutput: ...
