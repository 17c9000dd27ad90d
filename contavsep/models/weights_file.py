"""Where pretrained weights come from (``model.weights``), checked before anything trains.

Torch-free, so a sweep's ``--check`` and ``contavsep run`` refuse a missing file in their first
second instead of every trial failing on it after its dataset and model are built.
"""

from __future__ import annotations

from pathlib import Path

from contavsep.errors import ContavsepError


class WeightsError(ContavsepError, ValueError):
    """Pretrained weights cannot be read or do not fit the model; the message says how."""


def weights_path(source: str | Path) -> Path:
    """The local file that ``source`` (a path or a ``file://`` URI) names.

    Raises:
        WeightsError: another scheme (``s3://``...: open it through the platform's storage and
            pass the stream), or no such file.
    """
    text = str(source)
    if "://" in text:
        scheme, _, rest = text.partition("://")
        if scheme != "file":
            raise WeightsError(
                f"model weights '{text}': only local paths and file:// URIs are read here; "
                f"open {scheme}:// objects through the platform's storage and pass the stream"
            )
        text = rest
    path = Path(text)
    if not path.is_file():
        raise WeightsError(f"model weights file {path} does not exist (model.weights names a local .pt file)")
    return path
