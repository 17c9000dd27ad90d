"""The sweep's Optuna study on storage: a journal that outlives the sweep.

Optuna's journal storage (``JournalStorage`` + ``JournalFileBackend``) appends every ask and
tell of the study to one file, ``<storage>/sweeps/<name>/optuna-journal.log`` (:data:`JOURNAL_FILE`),
next to Tune's state. ``optuna.load_study``, Optuna's plots and ``optuna-dashboard <file>`` open
it; ``--resume`` continues the same study (same name, trials kept).

- ``file://`` storage: the journal is written in place (a running sweep's study can be watched).
- ``s3://`` storage: the journal is appended to a local copy (a private temp folder) and uploaded
  whole after every tell and every Tune checkpoint of the searcher (a few KB: one PUT); a
  resumed sweep downloads it first. S3 objects cannot be appended to, and Optuna's file backend
  needs a POSIX file.

The journal object travels in Tune's pickled searcher: it pickles its location and study name,
never S3 keys or a local path (both belong to the process that opens it; the keys come from
:func:`~contavsep_platform.settings.resolve_endpoints` when none were given).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any, Literal

from contavsep import storage

log = logging.getLogger("contavsep.study")

JOURNAL_FILE = "optuna-journal.log"
# An objective's direction, as optuna.create_study takes it.
Direction = Literal["minimize", "maximize"]


def journal_uri(sweep_uri: str) -> str:
    """Where a sweep's study journal lives: ``<sweep_uri>/optuna-journal.log``."""
    return storage.join(sweep_uri, JOURNAL_FILE)


class StudyJournal:
    """One sweep's Optuna study journal (see the module docstring).

    Args:
        uri: the journal's storage URI (:func:`journal_uri`).
        study_name: the Optuna study's name (the sweep's name).
        s3: S3 settings for an ``s3://`` journal (never pickled); default: the resolved endpoints'.
    """

    def __init__(self, uri: str, study_name: str, s3: storage.S3Settings | None = None):
        self.uri = uri
        self.study_name = study_name
        self.s3 = s3
        self._local: Path | None = None  # the journal file this process appends to
        self._tmp: str | None = None  # temp folder holding the local copy of an s3:// journal

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles the searcher with the sweep's state: the location, not this process's keys or files.
        return {"uri": self.uri, "study_name": self.study_name}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["uri"], state["study_name"])  # type: ignore[misc]

    @property
    def remote(self) -> bool:
        return storage.parse_uri(self.uri).scheme != "file"

    def _settings(self) -> storage.S3Settings | None:
        if self.s3 is None and self.remote:
            from contavsep_platform.settings import resolve_endpoints

            self.s3 = resolve_endpoints().s3
        return self.s3

    def local_path(self) -> Path:
        """The file Optuna appends to; an ``s3://`` journal is downloaded on first use (a new one
        starts empty)."""
        if self._local is not None:
            return self._local
        if not self.remote:
            path = Path(storage.parse_uri(self.uri).path)
            path.parent.mkdir(parents=True, exist_ok=True)
        else:
            self._tmp = tempfile.mkdtemp(prefix="contavsep-study-")
            # Tune restores a searcher this process cannot reach to close: the copy goes with it.
            weakref.finalize(self, shutil.rmtree, self._tmp, True)
            path = Path(self._tmp) / JOURNAL_FILE
            if storage.exists(self.uri, self._settings()):
                path.write_bytes(storage.read_bytes(self.uri, self._settings()))
        self._local = path
        return path

    def storage(self) -> Any:
        """An Optuna ``JournalStorage`` on the journal file."""
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        path = str(self.local_path())
        # The open-lock (O_EXCL lock file) works on every filesystem the storage may be on.
        return JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))

    def open(self, directions: list[Direction], sampler: Any) -> tuple[Any, bool]:
        """The study: created when the journal has none of that name, else loaded (its trials
        kept). Returns ``(study, created)``."""
        import optuna

        journal = self.storage()
        created = self.study_name not in {s.study_name for s in journal.get_all_studies()}
        study = optuna.create_study(
            storage=journal, study_name=self.study_name, sampler=sampler, directions=directions, load_if_exists=True
        )
        if not created and [d.name.lower() for d in study.directions] != [d.lower() for d in directions]:
            raise ValueError(
                f"the Optuna study '{self.study_name}' in {self.uri} has other objectives"
                f" ({[d.name.lower() for d in study.directions]}) than the space ({directions})"
            )
        return study, created

    def sync(self) -> None:
        """Upload the local copy of an ``s3://`` journal (no-op for ``file://``, written in place).
        An S3 outage is logged, not raised: the next tell uploads the whole file again."""
        if not self.remote or self._local is None or not self._local.exists():
            return
        try:
            storage.write_bytes_atomic(self.uri, self._local.read_bytes(), self._settings())
        except storage.StorageError as exc:
            log.warning("could not upload the Optuna study journal to %s (%s); the next update retries", self.uri, exc)

    def close(self) -> None:
        """Upload a last time and remove the local copy of an ``s3://`` journal."""
        self.sync()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp, self._local = None, None


def fetch_journal(uri: str, out_dir: Path, s3: storage.S3Settings | None = None) -> Path:
    """A local file of the journal at ``uri`` (``file://``: the file itself; ``s3://``: downloaded
    into ``out_dir``), for ``optuna-dashboard`` and ``optuna.load_study``."""
    parsed = storage.parse_uri(uri)
    if parsed.scheme == "file":
        path = Path(parsed.path)
        if not path.is_file():
            raise storage.StorageError(f"no Optuna study journal at {uri}")
        return path
    if not storage.exists(uri, s3):
        raise storage.StorageError(f"no Optuna study journal at {uri}")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / JOURNAL_FILE
    storage.write_bytes_atomic(f"file://{path.resolve()}", storage.read_bytes(uri, s3))
    return path
