"""Train/val/test split lists: which clip of which class goes to which split.

Two sources:

- a split-list JSON, the format of the paper's MUSIC-21 lists shipped with the package
  (``music21_contavsep_splits.json``: the ContAV-Sep release's train/val/test video ids, 840/100/100
  over 20 classes; ``congas`` is listed but not in the class order, so it is not used)::

      {"source": "...",                              (optional, free text)
       "class_order": ["accordion", "bagpipe", ...], (optional; default: sorted listed classes)
       "splits": {"train": {"<class>": ["<clip id>", ...], ...}, "val": {...}, "test": {...}}}

- no list: :func:`assign_splits` splits each class's clips by ratios in a seeded hash order of
  the clip ids, so the same files and seed always give the same split.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from contavsep.errors import ContavsepError

SPLITS: tuple[str, ...] = ("train", "val", "test")
PACKAGED_MUSIC21 = "music21-contavsep"  # name accepted by the CLI for the packaged paper lists


class SplitListError(ContavsepError, ValueError):
    """A split-list file is missing or malformed; the message names the file and the problem."""


@dataclass(frozen=True)
class SplitLists:
    """Per split, per class, the listed clip ids; and the class order of the dataset."""

    class_order: tuple[str, ...]
    clips: Mapping[str, Mapping[str, tuple[str, ...]]]  # split -> class -> clip ids
    source: str  # where the lists came from (file path or packaged name)

    def listed_classes(self) -> set[str]:
        """Every class named in any split (may include classes outside ``class_order``)."""
        return {c for per_class in self.clips.values() for c in per_class}

    def split_of(self, class_name: str, clip_id: str) -> str | None:
        """The split of a clip, or None when the lists do not mention it (under that class)."""
        for split, per_class in self.clips.items():
            if clip_id in per_class.get(class_name, ()):
                return split
        return None

    def clip_ids(self, class_name: str) -> set[str]:
        """All listed clip ids of one class, over all splits."""
        return {i for per_class in self.clips.values() for i in per_class.get(class_name, ())}

    def counts(self) -> dict[str, int]:
        """Listed clips per split, over the classes of ``class_order`` only."""
        return {s: sum(len(self.clips.get(s, {}).get(c, ())) for c in self.class_order) for s in SPLITS}


def parse_split_lists(data: object, source: str) -> SplitLists:
    """Validate the JSON structure described in the module docstring."""
    if not isinstance(data, Mapping) or not isinstance(data.get("splits"), Mapping):
        raise SplitListError(f"{source}: expected a JSON object with a 'splits' mapping of train/val/test")
    splits = data["splits"]
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown:
        raise SplitListError(f"{source}: unknown split name(s) {unknown}; use {list(SPLITS)}")
    clips: dict[str, dict[str, tuple[str, ...]]] = {}
    seen: dict[tuple[str, str], str] = {}
    for split, per_class in splits.items():
        if not isinstance(per_class, Mapping):
            raise SplitListError(f"{source}: splits.{split} must map class names to lists of clip ids")
        clips[split] = {}
        for class_name, ids in per_class.items():
            if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
                raise SplitListError(
                    f"{source}: splits.{split}.{class_name} must be a list of non-empty clip id strings"
                )
            for clip_id in ids:
                if (class_name, clip_id) in seen:
                    raise SplitListError(
                        f"{source}: clip '{clip_id}' of class '{class_name}' is listed in both "
                        f"'{seen[(class_name, clip_id)]}' and '{split}'"
                    )
                seen[(class_name, clip_id)] = split
            clips[split][class_name] = tuple(ids)
    listed = sorted({c for per_class in clips.values() for c in per_class})
    order = data.get("class_order")
    if order is None:
        class_order = tuple(listed)
    else:
        if (
            not isinstance(order, list)
            or not all(isinstance(c, str) and c for c in order)
            or len(set(order)) != len(order)
        ):
            raise SplitListError(f"{source}: class_order must be a list of unique class names")
        missing = [c for c in order if c not in listed]
        if missing:
            raise SplitListError(f"{source}: class_order names classes with no listed clips: {missing}")
        class_order = tuple(order)
    if not class_order:
        raise SplitListError(f"{source}: lists no classes")
    return SplitLists(class_order=class_order, clips=clips, source=source)


def load_split_lists(path: str | Path) -> SplitLists:
    """Read a split-list JSON file (or the packaged lists when ``path`` is ``music21-contavsep``)."""
    if str(path) == PACKAGED_MUSIC21:
        return music21_contavsep_splits()
    path = Path(path)
    if not path.is_file():
        raise SplitListError(
            f"split list {path} does not exist (or pass '{PACKAGED_MUSIC21}' for the packaged MUSIC-21 lists)"
        )
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SplitListError(f"split list {path} is not valid JSON ({exc})") from None
    return parse_split_lists(data, str(path))


def music21_contavsep_splits() -> SplitLists:
    """The paper's MUSIC-21 lists (ContAV-Sep release), shipped as package data."""
    text = resources.files("contavsep.data.ingest").joinpath("music21_contavsep_splits.json").read_text()
    return parse_split_lists(json.loads(text), PACKAGED_MUSIC21)


def _rank(seed: int, class_name: str, clip_id: str) -> str:
    return hashlib.sha256(f"{seed}:{class_name}:{clip_id}".encode()).hexdigest()


def assign_splits(
    clip_ids_by_class: Mapping[str, Sequence[str]],
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> dict[tuple[str, str], str]:
    """Split each class's clips by ``ratios`` (train, val, test): ``{(class, clip_id): split}``.

    Per class, the ids are ordered by a hash of (seed, class, id) and cut into test, val, train.
    The hash order makes a clip's split depend little on the other files: adding or removing one
    file moves at most the clips next to a cut, so a resumed ingestion mostly agrees with the run
    it resumes (clips already written keep the split they were written with). A class with at least 3 clips gets at least one val and one
    test clip when those ratios are non-zero; with 2 clips, one goes to test (evaluation needs
    every class); a single clip goes to train.
    """
    if len(ratios) != 3 or any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise ValueError(f"split ratios must be three non-negative numbers (train, val, test), got {ratios}")
    total = sum(ratios)
    r_train, r_val, r_test = (r / total for r in ratios)
    out: dict[tuple[str, str], str] = {}
    for class_name, ids in clip_ids_by_class.items():
        order = sorted(ids, key=lambda clip_id: _rank(seed, class_name, clip_id))
        n = len(order)
        n_test = round(n * r_test)
        n_val = round(n * r_val)
        if n >= 3:
            n_test = max(n_test, 1 if r_test > 0 else 0)
            n_val = max(n_val, 1 if r_val > 0 else 0)
        elif n == 2:
            n_test, n_val = (1 if r_test > 0 else 0), 0
        else:
            n_test = n_val = 0
        if r_train > 0:  # keep at least one training clip whenever training is asked for
            while n_test + n_val >= n and n_test + n_val > 0:
                if n_val >= n_test and n_val > 0:
                    n_val -= 1
                else:
                    n_test -= 1
        for i, clip_id in enumerate(order):
            split = "test" if i < n_test else "val" if i < n_test + n_val else "train"
            out[(class_name, clip_id)] = split
    return out
