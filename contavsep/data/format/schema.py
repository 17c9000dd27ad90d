"""The Arrow schema of a clip dataset (one row per clip) and the record the writer accepts.

Columns (docs/architecture.md section 3):

- ``clip_id`` string, unique in the dataset; ``class_name`` string; ``class_id`` int16 (index in
  the manifest's ordered class list); ``split`` string: ``train`` | ``val`` | ``test``;
- ``audio`` list<int16>: mono PCM at ``sample_rate`` (int32; 11025 Hz in this project);
- ``object_features`` list<fixed_size_list<float32, object_dim>>: one feature per sampled frame;
- ``motion_features`` fixed_size_list<fixed_size_list<float32, motion_dim>, motion_tokens>;
- ``source`` string: where the clip came from (video id and time span, or synthetic recipe).

The version below is written to ``manifest.json`` and into the Arrow schema metadata; readers
refuse any other version.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

SCHEMA_VERSION: int = 1
SPLITS: tuple[str, ...] = ("train", "val", "test")
# Arrow schema metadata key holding SCHEMA_VERSION (so a stray Parquet part is self-describing).
VERSION_KEY = b"contavsep.schema_version"


def clip_schema(object_dim: int = 512, motion_tokens: int = 8, motion_dim: int = 768) -> pa.Schema:
    """The Arrow schema of one clip row, with feature sizes (CLIP ViT-B/32: 512; VideoMAE: 8 x 768)."""
    return pa.schema(
        [
            pa.field("clip_id", pa.string(), nullable=False),
            pa.field("class_name", pa.string(), nullable=False),
            pa.field("class_id", pa.int16(), nullable=False),
            pa.field("split", pa.string(), nullable=False),
            pa.field("audio", pa.list_(pa.int16()), nullable=False),
            pa.field("sample_rate", pa.int32(), nullable=False),
            pa.field("object_features", pa.list_(pa.list_(pa.float32(), object_dim)), nullable=False),
            pa.field("motion_features", pa.list_(pa.list_(pa.float32(), motion_dim), motion_tokens), nullable=False),
            pa.field("source", pa.string(), nullable=False),
        ],
        metadata={VERSION_KEY: str(SCHEMA_VERSION).encode()},
    )


def feature_dims(schema: pa.Schema) -> tuple[int, int, int]:
    """``(object_dim, motion_tokens, motion_dim)`` of a clip schema."""
    obj = schema.field("object_features").type.value_type
    motion = schema.field("motion_features").type
    return obj.list_size, motion.list_size, motion.value_type.list_size


@dataclass(frozen=True)
class ClipRecord:
    """One clip to write.

    Shape:
        - audio: :math:`(S,)` int16 mono PCM at ``sample_rate``.
        - object_features: :math:`(F, D_o)` float32, one row per sampled frame (``D_o`` = 512).
        - motion_features: :math:`(T_m, D_m)` float32 (8 x 768).
    """

    clip_id: str
    class_name: str
    split: str  # "train" | "val" | "test"
    audio: np.ndarray
    sample_rate: int
    object_features: np.ndarray
    motion_features: np.ndarray
    source: str
