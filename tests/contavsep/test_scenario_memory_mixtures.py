"""Task split, exemplar memory, training-mixture sampling and the fixed test mixtures."""

import random

import numpy as np
import pytest

from contavsep.config import ConfigError, DataConfig
from contavsep.data.format.reader import open_dataset
from contavsep.data.sampling.evaluation_set import evaluation_set, window_starts
from contavsep.data.sampling.mixtures import TrainingSampler, crop
from contavsep.data.synthetic.synth import SynthConfig, build_synthetic
from contavsep.memory import ExemplarMemory
from contavsep.scenario import make_scenario

CLASSES = ["a", "b", "c", "d", "e", "f"]


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    root = tmp_path_factory.mktemp("mix")
    uri = f"file://{root}/ds"
    build_synthetic(uri, SynthConfig(classes=6, clips_per_class=(6, 2, 3), seconds=1.6, seed=3))
    return open_dataset(uri, cache_dir=root / "cache")


def test_scenario_split_in_manifest_order_and_shuffled():
    sc = make_scenario(CLASSES, DataConfig(classes_per_step=2, num_steps=3))
    assert sc.num_steps == 3
    assert sc.task_class_ids(1) == (2, 3) and sc.seen_class_ids(1) == (0, 1, 2, 3)
    assert [sc.task_of(c) for c in range(6)] == [0, 0, 1, 1, 2, 2]
    shuffled = make_scenario(CLASSES, DataConfig(classes_per_step=2, num_steps=3, shuffle_classes=True, seed=5))
    assert sorted(shuffled.class_order) == list(range(6)) and shuffled.class_order != sc.class_order
    assert shuffled == make_scenario(CLASSES, DataConfig(classes_per_step=2, num_steps=3, shuffle_classes=True, seed=5))
    # labels are positions in the training order: stable query indices
    assert [shuffled.label_of(c) for c in shuffled.class_order] == list(range(6))
    # a subset of the classes is fine; too few classes is a clear error
    assert make_scenario(CLASSES, DataConfig(classes_per_step=2, num_steps=2)).class_order == (0, 1, 2, 3)
    with pytest.raises(ConfigError, match="has 6 classes but"):
        make_scenario(CLASSES, DataConfig(classes_per_step=5, num_steps=2))


def test_memory_selection_is_random_per_class_kept_and_resumable():
    rows = {0: [1, 2, 3, 4], 1: [5, 6, 7], 2: [8]}
    mem = ExemplarMemory(2)
    mem.update(rows, [0, 1], random.Random(0))
    assert len(mem.rows_of(0)) == 2 and set(mem.rows_of(0)) <= {1, 2, 3, 4}
    first = mem.rows()
    mem.update(rows, [2], random.Random(1))  # a class with fewer clips than per_class keeps all
    assert mem.rows_of(2) == [8] and mem.rows()[:4] == first
    copy = ExemplarMemory(0)
    copy.load_state_dict(mem.state_dict())
    assert copy.rows() == mem.rows() and copy.per_class == 2
    none = ExemplarMemory(0)
    none.update(rows, [0, 1], random.Random(0))
    assert len(none) == 0


def test_training_mixtures_pair_different_classes_and_crop_randomly(table):
    sc = make_scenario(table.classes, DataConfig(classes_per_step=2, num_steps=3))
    sampler = TrainingSampler(table, sc, sc.task_class_ids(0), [], clip_samples=4000, seed=1)
    batch = sampler.sample(64)
    assert batch.source_wavs.shape == (64, 2, 4000)
    assert (batch.class_ids[:, 0] != batch.class_ids[:, 1]).all()
    assert set(batch.class_ids.unique().tolist()) == set(sc.task_class_ids(0))
    assert batch.object_features.shape == (64, 2, 512) and batch.motion_features.shape == (64, 2, 8, 768)
    assert not batch.is_memory.any()
    assert batch.source_wavs.abs().max() <= 1.0
    # random crops: the same clip drawn twice is (almost surely) cropped at different offsets
    assert len({tuple(w[:50].tolist()) for w in batch.source_wavs[:, 0]}) > len(set(batch.rows[:, 0].tolist()))
    # reproducible from the generator state
    state = sampler.state_dict()
    a = sampler.sample(4)
    sampler.load_state_dict(state)
    b = sampler.sample(4)
    assert np.array_equal(a.rows.numpy(), b.rows.numpy()) and np.array_equal(
        a.source_wavs.numpy(), b.source_wavs.numpy()
    )


def test_memory_share_follows_oversampling_or_fixed_share(table):
    sc = make_scenario(table.classes, DataConfig(classes_per_step=2, num_steps=3))
    memory = [int(table.rows_by_class("train")[c][0]) for c in sc.task_class_ids(0)]  # 1 per old class
    new = len(np.concatenate([table.rows_by_class("train")[c] for c in sc.task_class_ids(1)]))
    over = TrainingSampler(table, sc, sc.task_class_ids(1), memory, clip_samples=2000, oversample=20.0, seed=0)
    assert over.memory_share == pytest.approx(40 / (40 + new))
    fixed = TrainingSampler(table, sc, sc.task_class_ids(1), memory, clip_samples=2000, share=0.25, seed=0)
    assert fixed.memory_share == pytest.approx(0.25)
    drawn = fixed.sample(400)
    assert drawn.is_memory.float().mean().item() == pytest.approx(0.25, abs=0.07)
    # memory rows carry labels of old classes (their query index)
    assert set(drawn.labels[drawn.is_memory].tolist()) <= {0, 1}


def test_single_class_pool_cannot_make_different_class_mixtures(table):
    sc = make_scenario(table.classes, DataConfig(classes_per_step=1, num_steps=6))
    with pytest.raises(ValueError, match="at least 2 classes"):
        TrainingSampler(table, sc, sc.task_class_ids(0), [], clip_samples=2000)


def test_window_starts_spread_over_the_clip_and_never_repeat():
    assert window_starts(1000, 400, 4).tolist() == [0, 200, 400, 600]  # first at 0, last ends at the end
    assert window_starts(1000, 400, 1).tolist() == [0]
    assert window_starts(300, 400, 4).tolist() == [0]  # shorter than a window: one padded window
    assert window_starts(402, 400, 4).tolist() == [0, 1, 2]  # only 3 distinct positions
    with pytest.raises(ValueError, match="windows must be >= 1"):
        window_starts(1000, 400, 0)


def test_evaluation_sets_are_per_task_fixed_and_drawn_from_tasks_up_to_their_own(table):
    sc = make_scenario(table.classes, DataConfig(classes_per_step=2, num_steps=3))
    test_by_class = table.rows_by_class("test")
    length = 3000  # the 1.6 s clips hold 17640 samples: 4 distinct windows
    for task in range(3):
        s = evaluation_set(table, sc, task, clip_samples=length, windows_per_clip=4, pairs_per_clip=2, seed=7)
        anchors = np.concatenate([test_by_class[c] for c in sc.task_class_ids(task)])
        seen = np.concatenate([test_by_class[c] for c in sc.seen_class_ids(task)])
        # every anchor clip x 4 windows x 2 partners, anchor first
        assert len(s) == len(anchors) * 4 * 2
        assert sorted(set(s.rows[:, 0].tolist())) == sorted(anchors.tolist())
        assert set(s.rows[:, 1].tolist()) <= set(seen.tolist())  # partners only from tasks <= task
        assert (table.class_ids[s.rows[:, 0]] != table.class_ids[s.rows[:, 1]]).all()  # never self, never same class
        for r in anchors:  # the anchor's windows are spread over the clip, each used pairs_per_clip times
            starts = s.starts[s.rows[:, 0] == r, 0]
            expected = window_starts(len(table.audio(int(r))), length, 4)
            assert sorted(set(starts.tolist())) == expected.tolist() and len(starts) == 8
        # identical when drawn again (e.g. after a restart); another seed draws other partners
        again = evaluation_set(table, sc, task, clip_samples=length, windows_per_clip=4, pairs_per_clip=2, seed=7)
        assert all(np.array_equal(getattr(s, k), getattr(again, k)) for k in ("rows", "starts", "frames"))
        other = evaluation_set(table, sc, task, clip_samples=length, windows_per_clip=4, pairs_per_clip=2, seed=8)
        assert not np.array_equal(s.rows, other.rows)
    # a task's set does not depend on how many steps the sequence has (it is drawn from tasks <= j only)
    longer = make_scenario(table.classes, DataConfig(classes_per_step=2, num_steps=3))
    shorter = make_scenario(table.classes, DataConfig(classes_per_step=2, num_steps=2))
    a = evaluation_set(table, longer, 1, clip_samples=length, seed=7)
    b = evaluation_set(table, shorter, 1, clip_samples=length, seed=7)
    assert np.array_equal(a.rows, b.rows) and np.array_equal(a.starts, b.starts)
    # the batch crops exactly the recorded windows
    batch = s.batch(table, sc, slice(0, 3), length)
    r, start = int(s.rows[1, 0]), int(s.starts[1, 0])
    assert np.allclose(batch.source_wavs[1, 0].numpy(), table.audio(r)[start : start + length] / 32768.0)
    assert batch.tasks[:, 0].tolist() == [2, 2, 2]
    with pytest.raises(ValueError, match="at least 2 classes"):
        evaluation_set(
            table, make_scenario(table.classes, DataConfig(classes_per_step=1, num_steps=2)), 0, clip_samples=length
        )


def test_crop_pads_short_clips():
    audio = (np.arange(10) * 1000).astype(np.int16)
    out = crop(audio, 16, None)
    assert out.shape == (16,) and np.allclose(out[:10], audio / 32768.0) and not out[10:].any()


def _fields(batch):
    return {k: getattr(batch, k) for k in batch.__dataclass_fields__}


def test_batches_prepared_ahead_are_the_seeded_sequence_and_leave_the_sampler_where_on_demand_would(table):
    """The producer thread draws exactly `count` batches in order: same batches as drawing them on
    the training thread, and the sampler ends in the same state (later draws, e.g. EWC's Fisher
    batches, are unchanged)."""
    import torch

    from contavsep.data.sampling.batch_producer import BatchProducer

    sc = make_scenario(table.classes, DataConfig(classes_per_step=2, num_steps=3))
    runs = []
    for depth in (0, 3):
        sampler = TrainingSampler(table, sc, sc.task_class_ids(0), [], clip_samples=4000, seed=5)
        with BatchProducer(lambda s=sampler: s.sample(4), 7, device=torch.device("cpu"), depth=depth) as produced:
            batches = list(produced)
        runs.append((batches, sampler.sample(2)))
    (on_demand, after_a), (ahead, after_b) = runs
    assert len(on_demand) == len(ahead) == 7
    for x, y in zip([*on_demand, after_a], [*ahead, after_b]):
        for key, value in _fields(x).items():
            assert torch.equal(value, _fields(y)[key]), key


def test_a_producer_error_is_raised_in_order_and_leaving_early_stops_the_thread(table):
    import torch

    from contavsep.data.sampling.batch_producer import BatchProducer

    sc = make_scenario(table.classes, DataConfig(classes_per_step=2, num_steps=3))
    sampler = TrainingSampler(table, sc, sc.task_class_ids(0), [], clip_samples=4000, seed=5)
    calls = []

    def make():
        calls.append(len(calls))
        if len(calls) == 3:
            raise OSError("cache file vanished")
        return sampler.sample(2)

    producer = BatchProducer(make, 5, device=torch.device("cpu"), depth=2)
    assert len(next(producer)) == 2 and len(next(producer)) == 2
    with pytest.raises(OSError, match="cache file vanished"):
        next(producer)
    producer.close()
    # leaving after one batch: the thread stops although its queue is full
    producer = BatchProducer(lambda: sampler.sample(2), 1000, device=torch.device("cpu"), depth=2)
    next(producer)
    thread = producer._thread
    producer.close()
    assert thread is not None and not thread.is_alive()


def test_collated_batches_reject_classes_outside_the_scenario(table):
    from contavsep.data.sampling.mixtures import collate_clips

    sc = make_scenario(table.classes, DataConfig(classes_per_step=2, num_steps=2))  # 4 of the 6 classes
    outside = [r for r in table.rows("train") if table.class_id(r) not in sc.class_order][:2]
    with pytest.raises(ValueError, match="not in the scenario"):
        collate_clips(table, sc, np.array([outside]), np.zeros((1, 2), bool), [[0, 0]], [[0, 0]], 1000)


def test_pcm_batches_mix_to_exactly_the_float_batches(table):
    """A CUDA batch carries int16 samples (half the bytes to pin and copy); converted when mixed,
    it is bit for bit the float batch, padding included, and draws the same sequence."""
    import torch

    from contavsep.audio import mix_sources

    audio = (np.arange(-5, 5) * 3277).astype(np.int16)
    pcm = crop(audio, 16, None, out=np.full(16, 7, dtype=np.int16))
    assert pcm.dtype == np.int16 and (pcm[:10] == audio).all() and not pcm[10:].any()
    sc = make_scenario(table.classes, DataConfig(classes_per_step=2, num_steps=3))
    # clip_samples longer than some clips: zero padding on both paths
    a = TrainingSampler(table, sc, sc.task_class_ids(0), [], clip_samples=20000, seed=5)
    b = TrainingSampler(table, sc, sc.task_class_ids(0), [], clip_samples=20000, seed=5)
    for _ in range(2):
        as_float, as_pcm = a.sample(12), b.sample(12, pcm=True)
        assert as_float.source_wavs.dtype == torch.float32 and as_pcm.source_wavs.dtype == torch.int16
        for k, v in _fields(as_float).items():
            if k != "source_wavs":
                assert torch.equal(v, getattr(as_pcm, k)), k
        for x, y in zip(mix_sources(as_float.source_wavs), mix_sources(as_pcm.source_wavs)):
            assert y.dtype == torch.float32 and torch.equal(x, y)
    assert a.state_dict() == b.state_dict()
