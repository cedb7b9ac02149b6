"""Edge client over the in-process transport: real students, real updates, real oracle labels."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from stemcell.edge import EdgeClient, InProcessTransport
from stemcell.learning import AmsConfig, AmsTrainer, OracleTeacher, presence
from stemcell.learning.codec import UpdateMismatchError
from stemcell.models import build_base, make_app_model, segment_hash
from stemcell.world import CLASSES, World, WorldConfig

SIZE = 32
FPS = 10.0


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def world() -> World:
    return World(WorldConfig(seed=3, num_cameras=1, height=SIZE, width=SIZE, fps=FPS, duration_s=120.0))


def _setup(world: World, *, train_on_upload: bool = True, gamma: float | None = 0.05):
    base = build_base("tiny_cnn", num_classes=len(CLASSES), seed=0)
    trainer = AmsTrainer(AmsConfig(input_size=SIZE, iterations=3, batch_size=4, gamma=gamma))
    torch.manual_seed(0)
    trainer.add_job("cam", "car", make_app_model(base, 4, 1), CLASSES.index("car"))
    transport = InProcessTransport(trainer, OracleTeacher(world), camera_index={"cam": 0}, fps=FPS,
                                   train_on_upload=train_on_upload)
    torch.manual_seed(1)  # the edge's own head init differs: only updates can make it equal
    edge = EdgeClient("cam", {"car": make_app_model(base, 4, 1)}, transport, input_size=SIZE)
    return base, trainer, edge


def _play(edge: EdgeClient, world: World, start_s: float, stop_s: float) -> None:
    cam = world.camera(0)
    for i in range(int(start_s * FPS), int(stop_s * FPS)):
        edge.observe(cam.frame(i), i / FPS)


def _edge_state(edge: EdgeClient, app: str = "car") -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in edge.students[app].active.named_parameters() if p.requires_grad}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_first_contact_gets_a_full_update_bit_exact(world: World) -> None:
    _, trainer, edge = _setup(world)
    assert edge.sync() == {"car": 0}
    assert edge.counters.full_updates == 1 and edge.counters.downlink_bytes > 0
    assert _same(_edge_state(edge), trainer.job("cam", "car").learner.trainable_state())
    assert edge.sync() == {"car": 0} and edge.counters.updates == 1  # current: nothing more crosses


def test_streaming_uploads_at_the_asr_rate_and_applies_sparse_updates(world: World) -> None:
    _, trainer, edge = _setup(world)
    edge.sync()
    _play(edge, world, 0.0, 41.0)
    job = trainer.job("cam", "car")
    assert edge.counters.uploads == 4  # every T_update = 10 s
    # 1 fps until the first ASR decision: about one sample per second of video
    assert 30 <= edge.counters.samples <= 42
    assert trainer.sessions["cam"].samples == edge.counters.samples
    assert job.version >= 3 and edge.versions == {"car": job.version}
    assert edge.counters.full_updates == 1 and edge.counters.updates == 1 + job.version
    assert _same(_edge_state(edge), job.learner.trainable_state())  # the edge holds the server's model exactly
    sparse_bytes = sum(len(job.encoded[v]) for v in job.encoded)
    assert edge.counters.downlink_bytes < 2 * len(job.payload_since(None)[0]) + sparse_bytes
    assert edge.counters.uplink_bytes > 0 and edge.counters.frames == 410


def test_a_reconnecting_edge_gets_one_merged_update(world: World) -> None:
    _, trainer, edge = _setup(world, train_on_upload=False)
    edge.sync()
    cam = world.camera(0)
    for k in range(3):  # the server trains three times while the edge does not pull
        stamps = np.arange(10 * k, 10 * k + 10, 1.0)
        idx = (stamps * FPS).astype(int)
        trainer.add_samples("cam", stamps, cam.frames(idx), presence(OracleTeacher(world).label(cam.frames(idx), _meta(idx)), CLASSES))
        trainer.run_pending()
    payload = edge.transport.fetch("cam", "car", 0)
    assert payload is not None and payload.kind == "merged" and payload.base_version == 0
    edge.sync()
    assert edge.versions == {"car": trainer.job("cam", "car").version}
    assert _same(_edge_state(edge), trainer.job("cam", "car").learner.trainable_state())


def _meta(idx: np.ndarray):
    from stemcell.learning import FrameMeta

    return FrameMeta(0, idx)


def test_swap_shares_the_stem_and_switches_predictions(world: World) -> None:
    base, _, edge = _setup(world)
    student = edge.students["car"]
    stem_hash = [segment_hash(s) for s in student.active.stem]
    assert all(a is b for a, b in zip(student.active.stem, student.standby.stem))
    before = student.active
    frame = world.camera(0).frame(0)[None]
    old_score = edge.scores(frame)["car"]
    edge.sync()
    assert student.active is not before and student.standby is before  # swapped, not patched in place
    assert edge.scores(frame)["car"] != pytest.approx(old_score)
    assert [segment_hash(s) for s in student.active.stem] == stem_hash
    assert all(a is b for a, b in zip(student.active.stem, base.segments[:4]))


def test_edge_adopts_the_servers_rates(world: World) -> None:
    _, trainer, edge = _setup(world)
    trainer.config = trainer.sessions["cam"].config = AmsConfig(input_size=SIZE, iterations=3, batch_size=4,
                                                               adaptive=False, fixed_fps=0.5)
    edge.sync()
    _play(edge, world, 0.0, 10.5)
    assert edge.sampling_fps == 0.5 and edge.t_update_s == 10.0
    samples_before = edge.counters.samples
    _play(edge, world, 10.5, 30.5)
    assert edge.counters.samples - samples_before == pytest.approx(10, abs=1)  # 20 s at 0.5 fps


def test_a_moved_branchpoint_reaches_the_edge_as_a_full_update_of_the_new_cut(world: World) -> None:
    base, trainer, edge = _setup(world)
    edge.rebuild = lambda app, b: make_app_model(base, b, 1)
    edge.sync()
    _play(edge, world, 0.0, 21.0)
    old = trainer.job("cam", "car")
    assert old.version >= 1 and edge.versions == {"car": old.version}
    stem_hashes = [segment_hash(s) for s in make_app_model(base, 3, 1).stem]

    moved = trainer.add_job("cam", "car", make_app_model(base, 3, 1), CLASSES.index("car"), {"branchpoint": 3})
    assert moved is not old and moved.version == old.version + 1 and moved.branchpoint == 3
    assert trainer.add_job("cam", "car", make_app_model(base, 3, 1), 1, {"branchpoint": 3}) is moved  # idempotent
    assert trainer.order.count(("cam", "car")) == 1
    payload = trainer.job("cam", "car").payload_since(old.version)
    assert payload is not None and payload[1].is_full  # old-cut updates cannot patch the new layout

    assert edge.sync() == {"car": moved.version}
    assert edge.counters.branchpoint_moves == 1 and edge.students["car"].active.branchpoint == 3
    assert _same(_edge_state(edge), moved.learner.trainable_state())
    _play(edge, world, 21.0, 41.0)  # training goes on at the new cut, on the camera's same buffer
    assert moved.version > old.version + 1 and _same(_edge_state(edge), moved.learner.trainable_state())
    assert [segment_hash(s) for s in moved.learner.model.stem] == stem_hashes  # the stem stays shared


def test_an_edge_without_rebuild_refuses_a_moved_branchpoint(world: World) -> None:
    base, trainer, edge = _setup(world)
    edge.sync()
    trainer.add_job("cam", "car", make_app_model(base, 5, 1), CLASSES.index("car"), {"branchpoint": 5})
    with pytest.raises(UpdateMismatchError, match="branchpoint 5"):
        edge.sync()
    assert edge.versions == {"car": 0}  # nothing half-applied: it keeps serving its model


def test_edge_and_server_sampler_keep_the_same_frames(world: World) -> None:
    """One sampling rule (`stemcell.learning.rates.sample_due`): the edge client and the server's live
    sampler, fed the same jittered stream at the same ASR rate, send the teacher the same frames."""
    from stemcell.learning.live import LiveSampler

    _, _, edge = _setup(world)
    edge.sampling_fps, edge.t_update_s = 0.7, 1e9  # no upload: the samples stay pending
    sampler = LiveSampler(batch_size=10_000, initial_fps=0.7)
    stamps = np.cumsum(np.random.default_rng(0).uniform(0.05, 0.3, size=120))
    frame = world.camera(0).frame(0)
    for ts in stamps:
        edge.observe(frame, float(ts), infer=False)
        sampler.offer("cam", [frame], [float(ts)])
    kept = [t for t, _ in edge._pending]
    assert len(kept) > 5 and kept == sampler._cameras["cam"].stamps
    assert all(b - a >= 1 / 0.7 for a, b in itertools.pairwise(kept))
