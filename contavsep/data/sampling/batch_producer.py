"""Training batches prepared ahead of the training loop, so the device never waits for the host.

A :class:`BatchProducer` calls ``make()`` (the step's seeded sampler) exactly ``count`` times,
in order, on one background thread, and keeps at most ``depth`` finished batches waiting. The
sequence of batches is therefore the one the training thread would have drawn itself: the
sampler's generator is consumed in the same order and by the same number of draws, so a step
gives bit-identical batches with the producer on or off, and after the last batch the sampler
is exactly where a synchronous loop would have left it (``ctx.sample_batches`` after the loop,
e.g. EWC's Fisher batches, draws the same batches either way).

On CUDA the producer also pins each batch and copies it to the device on its own stream; the
training stream waits on an event of that copy instead of the host waiting on the copy. Cropping
and gathering are numpy/torch work that releases the GIL, so one thread overlaps with the
training thread's kernel launches.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator

import torch

from contavsep.data.sampling.mixtures import MixtureBatch

_DONE = object()


class BatchProducer(Iterator[MixtureBatch]):
    """``count`` batches of ``make()`` on ``device``, prepared ``depth`` ahead (0 = on demand).

    Use as a context manager (or call :meth:`close`): leaving early stops the thread. An error in
    ``make()`` is raised by the ``next()`` that would have returned its batch.
    """

    def __init__(self, make: Callable[[], MixtureBatch], count: int, *, device: torch.device, depth: int = 2):
        if depth < 0:
            raise ValueError(f"depth must be >= 0, got {depth}")
        self._cuda = device.type == "cuda"
        if self._cuda and device.index is None:  # set_device in the thread needs the index
            device = torch.device("cuda", torch.cuda.current_device())
        self._make, self._count, self._device, self._depth = make, count, device, depth
        self._taken = 0
        self.prepare_seconds = 0.0  # host time spent in make() (and pinning): the data path's cost
        self._thread: threading.Thread | None = None
        self._stream: torch.cuda.Stream | None = None  # the producer's copy stream (CUDA, depth > 0)
        if depth > 0 and count > 0:
            self._queue: queue.Queue = queue.Queue(maxsize=depth)
            self._stop = threading.Event()
            self._stream = torch.cuda.Stream(device=device) if self._cuda else None
            self._thread = threading.Thread(target=self._produce, name="contavsep-batches", daemon=True)
            self._thread.start()

    # ------------------------------------------------------------------ producer side
    def _prepare(self) -> tuple[MixtureBatch, torch.cuda.Event | None]:
        started = time.perf_counter()
        batch = self._make()
        if not self._cuda:
            self.prepare_seconds += time.perf_counter() - started
            return batch, None
        batch = batch.pin_memory()
        self.prepare_seconds += time.perf_counter() - started
        if self._stream is None:  # on demand: copy on the training stream, asynchronously
            return batch.to(self._device), None
        with torch.cuda.stream(self._stream):
            on_device = batch.to(self._device)
            copied = torch.cuda.Event()
            copied.record(self._stream)
        return on_device, copied

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            if self._cuda:
                torch.cuda.set_device(self._device)
            for _ in range(self._count):
                if self._stop.is_set() or not self._put(self._prepare()):
                    return
            self._put(_DONE)
        except BaseException as exc:  # handed to the training thread, raised there
            self._put(exc)

    # ------------------------------------------------------------------ consumer side
    def __iter__(self) -> BatchProducer:
        return self

    def __next__(self) -> MixtureBatch:
        if self._taken >= self._count:
            raise StopIteration
        if self._thread is None:
            batch, copied = self._prepare()
            if not self._cuda:
                batch = batch.to(self._device)
        else:
            item = self._queue.get()
            if isinstance(item, BaseException):
                self.close()
                raise item
            if item is _DONE:  # cannot happen before count batches; kept as a guard
                raise StopIteration
            batch, copied = item
        if copied is not None:
            current = torch.cuda.current_stream(self._device)
            current.wait_event(copied)
            batch.record_stream(current)
        self._taken += 1
        return batch

    def close(self) -> None:
        """Stop the thread (it may be blocked on a full queue) and drop what it prepared."""
        if self._thread is None:
            return
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread.join()
        self._thread = None

    def __enter__(self) -> BatchProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
