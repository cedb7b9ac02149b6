"""Layering: `stemcell/` is the pure-logic layer and never imports ray, fastapi or serve (STYLE.md
rule 1); `actors/` (Ray shells) never import `app/` (the HTTP layer), so an actor's process does not
load the web stack and the dependency points one way: app -> actors -> stemcell."""
import ast
from pathlib import Path

FORBIDDEN = ("ray", "fastapi", "starlette", "uvicorn")
REPO = Path(__file__).resolve().parents[2]
ROOT = REPO / "stemcell"


def _imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_pure_logic_layer_has_no_ray_or_web_imports() -> None:
    offenders = {
        str(p.relative_to(ROOT)): sorted(_imported_roots(p) & set(FORBIDDEN))
        for p in ROOT.rglob("*.py")
        if _imported_roots(p) & set(FORBIDDEN)
    }
    assert offenders == {}


def test_actors_do_not_import_the_http_layer() -> None:
    offenders = sorted(str(p.relative_to(REPO)) for p in (REPO / "actors").rglob("*.py") if "app" in _imported_roots(p))
    assert offenders == []


def test_scheduling_policies_import_no_control_or_state() -> None:
    """`stemcell.scheduling` holds policies and models only; the glue that reads the store or shapes
    actor calls lives in `stemcell.control` and depends on scheduling, never the other way round."""
    offenders = {}
    for p in (ROOT / "scheduling").rglob("*.py"):
        tree = ast.parse(p.read_text(), filename=str(p))
        modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        bad = sorted(m for m in modules if m.startswith(("stemcell.state", "stemcell.control")))
        if bad:
            offenders[p.name] = bad
    assert offenders == {}
