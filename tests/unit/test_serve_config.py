"""serve.yaml validation: the shipped file loads, paths become absolute, bad fields are named."""
from __future__ import annotations

from pathlib import Path

import pytest

import stemcell.serve_config
from stemcell.config import ConfigError
from app.learning_service import teacher_config, world_camera
from stemcell.learning.teachers import DetectorTeacherConfig, ModelTeacherConfig, OracleTeacherConfig
from stemcell.serve_config import admin_token_from_env, load_serve_config

REPO = Path(__file__).resolve().parents[2]


def test_shipped_serve_config_is_valid_and_absolute(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(stemcell.serve_config, "node_cpus", lambda: 2)  # replicas and threads are `auto`
    config = load_serve_config(REPO / "configs" / "serve.yaml")
    assert config.package_dir.is_absolute() and config.package_dir == tmp_path / "pkg" / "demo"
    assert config.executors.placement == "spread" and config.executors.node_labels == {}
    assert config.ingress.node_labels == {} and config.ingress.access_log is False
    assert config.ingress.replica_options() == {"num_replicas": 1}  # autoscaling is commented out
    assert config.events.enabled and config.events.snapshot_dir is None
    assert config.webhooks.allow_private is False  # private targets refused unless a config says otherwise


def test_autoscaling_and_snapshot_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "serve.yaml"
    path.write_text("package_dir: pkg\nstate_path: state.db\nevents: {snapshot_dir: snaps}\n"
                    "ingress: {autoscaling: {min_replicas: 2, max_replicas: 6, target_ongoing_requests: 8}}\n")
    config = load_serve_config(path)
    assert config.ingress.replica_options() == {
        "autoscaling_config": {"min_replicas": 2, "max_replicas": 6, "target_ongoing_requests": 8.0}}
    assert config.events.snapshot_dir == tmp_path / "snaps"
    assert config.base_dir == tmp_path and config.package_dir == tmp_path / "pkg"


def test_relative_paths_follow_base_dir_wherever_the_process_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "serve.yaml"
    path.write_text(f"package_dir: pkg/demo\nstate_path: state.db\nbase_dir: {tmp_path / 'site'}\n")
    config = load_serve_config(path)
    monkeypatch.chdir(tmp_path)  # a replica runs elsewhere: the recorded base_dir still decides
    assert config.package_dir == tmp_path / "site" / "pkg" / "demo"
    assert config.resolve("pkg/demo") == config.package_dir and config.resolve("/abs/x") == Path("/abs/x")


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("executors: {placement: everywhere}", "executors.placement"),
        ("executors: {node_labels: {stemcell-role: [gpu]}}", "executors.node_labels"),
        ("ingress: {node_labels: gpu}", "ingress.node_labels"),
        ("http: {port: 0}", "http.port"),
        ("http: {ingress: nginx}", "http.ingress"),
        ("limits: {max_image_bytes: 10}", "limits.max_image_bytes"),
        ("executor: {count: 2}", "executor"),
        ("ingress: {autoscaling: {min_replicas: 3, max_replicas: 2}}", "ingress.autoscaling"),
        ("webhooks: {allow_privat: true}", "webhooks.allow_privat"),
        ("events: {snapshot_max_bytes: 0}", "events.snapshot_max_bytes"),
        ("learning: {teacher: {kind: oracle, world: {sed: 1}, cameras: {a: 0}}}", "learning.teacher.oracle.world"),
        ("learning: {teacher: {kind: oracle, world: {num_cameras: 2}, cameras: {a: 2}}}", "learning.teacher.oracle"),
        ("learning: {teacher: {kind: oracle, world: {}, cameras: {}}}", "learning.teacher.oracle.cameras"),
        ("learning: {teacher: {kind: model, weights: t.safetensors}}", "learning.teacher.model"),
        ("learning: {teacher: {kind: yolo}}", "learning.teacher"),
        ("learning: {teacher: {kind: opencv_hog_people, scale: 0}}", "learning.teacher.opencv_hog_people.scale"),
        ("learning: {teacher: {kind: python, factory: 'not a factory', classes: [person]}}",
         "learning.teacher.python.factory"),
        ("learning: {teacher: {kind: torchvision_detector, arch: yolov8, weights: w.pth, class_map: {person: person}}}",
         "learning.teacher.torchvision_detector.arch"),
    ],
)
def test_bad_serve_field_is_named(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "serve.yaml"
    path.write_text(f"package_dir: pkg\nstate_path: state.db\n{text}\n")
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_serve_config(path)


def test_admin_token_must_come_from_the_environment_and_be_long(tmp_path: Path) -> None:
    path = tmp_path / "serve.yaml"
    path.write_text("package_dir: pkg\nstate_path: state.db\nadmin_token_env: MY_TOKEN\n")
    config = load_serve_config(path)
    with pytest.raises(ValueError, match=r"\$MY_TOKEN"):
        admin_token_from_env(config, {"MY_TOKEN": "short"})
    assert admin_token_from_env(config, {"MY_TOKEN": "x" * 32}) == "x" * 32


def test_teacher_config_follows_the_learning_section(tmp_path: Path) -> None:
    path = tmp_path / "serve.yaml"
    path.write_text("package_dir: pkg\nstate_path: state.db\n")
    plain = load_serve_config(path)
    assert teacher_config(plain) == ModelTeacherConfig(kind="model", package_dir=plain.package_dir)
    assert plain.package_dir.is_absolute()
    path.write_text("package_dir: pkg\nstate_path: state.db\n"
                    "learning: {teacher: {kind: model, base: resnet18, weights: t.safetensors}}\n")
    model = teacher_config(load_serve_config(path))
    assert isinstance(model, ModelTeacherConfig) and model.package_dir is None
    assert model.weights == Path("t.safetensors").resolve()  # absolute: the actor runs in another folder
    path.write_text("package_dir: pkg\nstate_path: state.db\n"
                    "learning: {teacher: {kind: oracle, world: {seed: 3, segment_s: [10, 20]}, cameras: {door: 1}}}\n")
    oracle = teacher_config(load_serve_config(path))
    assert isinstance(oracle, OracleTeacherConfig) and oracle.world == {"seed": 3, "segment_s": (10, 20)}
    path.write_text("package_dir: pkg\nstate_path: state.db\n"
                    "learning: {teacher: {kind: torchvision_detector, arch: ssdlite320_mobilenet_v3_large, "
                    "weights: det.pth, class_map: {person: person, truck: vehicle}}}\n")
    detector = teacher_config(load_serve_config(path))
    assert isinstance(detector, DetectorTeacherConfig) and detector.weights == Path("det.pth").resolve()


def test_world_camera_maps_ids_and_checks_video_time() -> None:
    oracle = OracleTeacherConfig(kind="oracle", world={"fps": 10, "duration_s": 60}, cameras={"door": 2})
    assert world_camera(None, "anything", [1e9]) == 0  # model teachers read pixels only
    assert world_camera(oracle, "door", [0.0, 59.9]) == 2
    with pytest.raises(ValueError, match="no world camera"):
        world_camera(oracle, "gate", [1.0])
    with pytest.raises(ValueError, match=r"\[0, 60\) s"):
        world_camera(oracle, "door", [59.0, 60.0])
    with pytest.raises(ValueError, match=r"\[0, 60\) s"):
        world_camera(oracle, "door", [-1.0])


def test_planner_section_takes_registered_policies_only(tmp_path: Path) -> None:
    from stemcell.scheduling.registry import SCHEDULERS
    from stemcell.scheduling.slicing import SLICING_POLICIES

    path = tmp_path / "serve.yaml"
    for scheduler in SCHEDULERS:  # every registered policy is a valid setting
        for slicing in SLICING_POLICIES:
            path.write_text(f"package_dir: pkg\nstate_path: s.db\nplanner: {{scheduler: {scheduler}, slicing: {slicing}}}\n")
            planner = load_serve_config(path).planner
            assert (planner.scheduler, planner.slicing) == (scheduler, slicing)
    for text, field in (("planner: {scheduler: fastest}", "mainstream"), ("planner: {slicing: lottery}", "round_robin"),
                        ("planner: {quantum: 0}", "planner.quantum"), ("planner: {worker_class: 'os.system'}",
                                                                       "planner.worker_class")):
        path.write_text(f"package_dir: pkg\nstate_path: s.db\n{text}\n")
        with pytest.raises(ConfigError, match=field.replace(".", r"\.")):  # the error names the known policies
            load_serve_config(path)


def test_shipped_planner_section_states_the_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """configs/serve.yaml documents every planner setting at its default (a changed default shows here)."""
    from stemcell.serve_config import PlannerSection

    monkeypatch.chdir(tmp_path)
    shipped = load_serve_config(REPO / "configs" / "serve.yaml").planner
    assert shipped == PlannerSection()
    written = {line.split(":")[0].strip() for line in (REPO / "configs" / "serve.yaml").read_text().split("planner:")[1]
               .splitlines() if line.startswith("  ") and not line.strip().startswith("#")}
    assert written == set(PlannerSection.model_fields) - {"mps", "worker_class"}
