"""The synthetic world: determinism, random access, exact labels, recurrence, class balance."""
from __future__ import annotations

import numpy as np
import pytest

from stemcell.world import CLASSES, World, WorldConfig, extract_events
from stemcell.world.datatypes import Event

SMALL = WorldConfig(seed=0, num_cameras=3, duration_s=120.0, segment_s=(20.0, 40.0))
PROBES = [0, 7, 199, 200, 555, 1000, 1199]


def _world(**changes: object) -> World:
    return World(WorldConfig(**{**SMALL.__dict__, **changes}))


def test_same_seed_gives_identical_frames_and_labels() -> None:
    a, b = _world().camera(1), _world().camera(1)
    assert np.array_equal(a.frames(PROBES), b.frames(PROBES))
    assert [a.labels(i) for i in PROBES] == [b.labels(i) for i in PROBES]
    assert np.array_equal(a.presence(), b.presence())
    assert np.array_equal(a.scene_ids(), b.scene_ids())


def test_different_seed_or_camera_gives_different_world() -> None:
    base = _world().camera(1)
    other_seed = _world(seed=1).camera(1)
    other_camera = _world().camera(2)
    for other in (other_seed, other_camera):
        assert not np.array_equal(base.presence(), other.presence())
        assert not np.array_equal(base.frames(PROBES), other.frames(PROBES))


def test_random_access_equals_sequential_rendering() -> None:
    """Frames from every segment (every weather kind) render identically alone and out of order."""
    world = _world()
    assert {world.scene_pool[s.scene_id].weather for c in world.cameras() for s in c.segments} == {
        "clear", "rain", "fog", "snow"
    }
    probes = [(c.camera, i) for c in world.cameras() for s in c.segments for i in (s.start, s.start + 1, s.stop - 1)]
    sequential = [world.camera(cam).frame(i) for cam, i in probes]
    fresh = _world()  # nothing cached yet, rendered in shuffled order
    for j in np.random.default_rng(5).permutation(len(probes)):
        cam, i = probes[j]
        assert np.array_equal(fresh.camera(cam).frame(i), sequential[j]), probes[j]


def test_camera_timeline_does_not_depend_on_camera_count_or_duration() -> None:
    reference = _world().camera(1)
    more_cameras = _world(num_cameras=6).camera(1)
    longer = _world(duration_s=240.0).camera(1)
    assert np.array_equal(reference.presence(), more_cameras.presence())
    assert np.array_equal(reference.presence(), longer.presence()[: reference.num_frames])
    assert np.array_equal(reference.frame(555), longer.frame(555))


def test_presence_and_scene_ids_agree_with_per_frame_labels() -> None:
    cam = _world().camera(2)
    presence, scenes = cam.presence(), cam.scene_ids()
    assert presence.shape == (cam.num_frames, len(CLASSES)) and presence.dtype == bool
    for i in range(cam.num_frames):
        labels = cam.labels(i)
        assert np.array_equal(labels.presence, presence[i]), i
        assert labels.scene_id == scenes[i]
        assert {b.cls for b in labels.boxes} == set(np.flatnonzero(presence[i]).tolist())


def test_boxes_are_clipped_to_the_frame_and_non_empty() -> None:
    cam = _world(height=96, width=160).camera(0)
    boxes = [b for i in range(0, cam.num_frames, 3) for b in cam.labels(i).boxes]
    assert boxes
    for b in boxes:
        assert 0 <= b.x0 < b.x1 <= 160 and 0 <= b.y0 < b.y1 <= 96
    assert any(b.x0 == 0 for b in boxes) and any(b.x1 == 160 for b in boxes)  # objects cross the edges


def test_frames_have_the_configured_shape_and_change_over_time() -> None:
    cam = _world(height=64, width=96).camera(0)
    frames = cam.frames([0, 1, 900])
    assert frames.shape == (3, 64, 96, 3) and frames.dtype == np.uint8
    assert not np.array_equal(frames[0], frames[1])  # per-frame sensor noise


def test_objects_are_drawn_inside_their_boxes() -> None:
    """Pixels change far more inside object boxes than outside between nearby frames of one scene."""
    cam = _world().camera(0)
    inside, outside = [], []
    empty = np.flatnonzero(~cam.presence().any(axis=1))
    for i in np.flatnonzero(cam.presence().any(axis=1))[::25]:
        seg = cam.segment_at(int(i))
        candidates = empty[(empty >= seg.start) & (empty < seg.stop)]
        if not len(candidates):
            continue
        j = int(candidates[np.argmin(np.abs(candidates - i))])
        diff = np.abs(cam.frame(int(i)).astype(np.int16) - cam.frame(j).astype(np.int16)).mean(axis=2)
        mask = np.zeros(diff.shape, bool)
        for b in cam.labels(int(i)).boxes:
            mask[b.y0 : b.y1, b.x0 : b.x1] = True
        inside.append(diff[mask].mean())
        outside.append(diff[~mask].mean())
    assert len(inside) >= 10
    assert np.mean(inside) > 2.0 * np.mean(outside)


def test_scene_types_recur_across_cameras_and_time() -> None:
    world = World(WorldConfig())
    cams = world.cameras()
    scenes_per_camera = [set(seg.scene_id for seg in c.segments) for c in cams]
    shared = set.intersection(*scenes_per_camera[:2]) | set.intersection(*scenes_per_camera[2:])
    assert shared, "some scene type must appear on more than one camera"
    for cam in cams:
        visits = [seg.scene_id for seg in cam.segments]
        assert len(visits) > len(set(visits)), "every camera returns to a scene type it has seen"
        assert all(a != b for a, b in zip(visits, visits[1:]))
        assert all(45 * 10 <= seg.stop - seg.start <= 120 * 10 for seg in cam.segments[:-1])
    assert all(world.scene_pool[s].name for s in set.union(*scenes_per_camera))


def test_class_frequencies_and_event_lengths_are_non_trivial() -> None:
    world = World(WorldConfig())
    presence = np.concatenate([c.presence() for c in world.cameras()])
    assert np.all((presence.mean(axis=0) > 0.12) & (presence.mean(axis=0) < 0.5)), presence.mean(axis=0)
    lengths = [e.length for c in world.cameras() for k in range(len(CLASSES)) for e in extract_events(c.presence()[:, k])]
    assert min(lengths) <= 10 and max(lengths) >= 200  # a few frames .. tens of seconds


def test_events_are_the_maximal_runs_of_presence() -> None:
    """Checked against the definition, frame by frame: every frame of an event is present, the frames
    just outside it are not, and together the events cover exactly the present frames."""
    cam = _world().camera(0)
    present = cam.presence()[:, CLASSES.index("car")].astype(bool)
    events = cam.events("car")
    assert events, "the test world has cars"
    covered = np.zeros_like(present)
    for e in events:
        assert present[e.start:e.stop].all() and e.length == e.stop - e.start > 0
        assert (e.start == 0 or not present[e.start - 1]) and (e.stop == len(present) or not present[e.stop])
        covered[e.start:e.stop] = True
    assert np.array_equal(covered, present)
    assert [e.start for e in events] == sorted(e.start for e in events)
    assert extract_events(np.array([1, 1, 0, 1, 0, 0, 1], bool)) == [Event(0, 2), Event(3, 4), Event(6, 7)]


def test_invalid_config_and_indices_are_rejected() -> None:
    with pytest.raises(ValueError):
        WorldConfig(height=8)
    with pytest.raises(ValueError):
        WorldConfig(scenes_per_camera=9)
    world = _world()
    with pytest.raises(IndexError):
        world.camera(3)
    with pytest.raises(IndexError):
        world.camera(0).frame(world.camera(0).num_frames)
