"""Every public method of every Ray actor class takes and returns typed values, never a dict.

What crosses an actor call is a contract (`stemcell.control.contracts`, records, arrays, scalars):
a dict read by key on the other side is a contract nobody can see. This test reads the actor
classes' source (no Ray, no torch import needed for the check itself) and fails on a parameter or
return annotated as `dict`/`Dict` or not annotated at all. A `Mapping` of typed values keyed by id
(camera -> its apps, app -> weights tensor) is a typed value; a JSON document the store keeps as such
is `Mapping[str, Any]` by design (camera configs, plan sections).

`JSON_VIEWS` are methods whose answer is a JSON document passed on as it is (the saved plan's
sections, operators' counters), not read by key by a caller.
"""
from __future__ import annotations

import ast
import importlib
import inspect
import re
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DICT = re.compile(r"(?<![\w.])(dict|Dict|typing\.Dict)\b")
JSON_VIEWS = {
    "actors.state_store.StateStore.plan_section",  # one section of the saved plan, as saved
    "actors.retrain_worker.RetrainWorker.stats",  # operators' and tests' per-job counters, shown as they are
    "actors.camera_ingest.CameraIngestShell.latest",  # a pulled camera's `GET /cameras/{id}/latest` body, as served
}


def _class_defs() -> dict[str, list[ast.ClassDef]]:
    """Actor name -> the ClassDefs whose public methods it serves (its own, then its bases')."""
    out: dict[str, list[ast.ClassDef]] = {}
    for path in sorted((REPO / "actors").glob("*.py")):
        module_name = f"actors.{path.stem}"
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and any(ast.unparse(d).startswith("ray.remote") for d in node.decorator_list):
                out[f"{module_name}.{node.name}"] = [node]
            elif isinstance(node, ast.Call) and isinstance(node.func, (ast.Call, ast.Attribute)) \
                    and ast.unparse(node.func).startswith("ray.remote") and node.args \
                    and isinstance(node.args[0], ast.Name):
                cls = getattr(importlib.import_module(module_name), node.args[0].id)
                defs = []
                for base in cls.__mro__[:-1]:  # its own and inherited methods (not object's)
                    source = ast.parse(textwrap.dedent(inspect.getsource(base)))
                    defs.append(next(n for n in source.body if isinstance(n, ast.ClassDef)))
                out[f"{module_name}.{node.args[0].id}"] = defs
    return out


def _violations(actor: str, defs: list[ast.ClassDef], skip: set[str]) -> list[str]:
    found = []
    for cls in defs:
        for fn in cls.body:
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) or fn.name.startswith("_"):
                continue
            where = f"{actor}.{fn.name}"
            if where in skip:
                continue
            args = fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs
            for arg in args[1:] if args and args[0].arg in ("self", "cls") else args:
                text = ast.unparse(arg.annotation) if arg.annotation is not None else None
                if text is None or DICT.search(text):
                    found.append(f"{where}({arg.arg}: {text})")
            returns = ast.unparse(fn.returns) if fn.returns is not None else None
            if returns is None or DICT.search(returns):
                found.append(f"{where} -> {returns}")
    return found


def test_every_actor_class_is_found() -> None:
    actors = _class_defs()
    assert {"actors.stem_executor.StemExecutorShell", "actors.routed_executor._RoutedExecutor",
            "actors.retrain_worker.RetrainWorker", "actors.planner.Planner",
            "actors.state_store.StateStore"} <= set(actors), sorted(actors)


def test_actor_methods_take_and_return_no_dicts() -> None:
    offenders = [v for actor, defs in _class_defs().items() for v in _violations(actor, defs, JSON_VIEWS)]
    assert offenders == []


def test_the_check_catches_what_it_should() -> None:
    """The checker itself: a dict parameter, a dict return and a missing annotation are each caught."""
    source = ast.parse(textwrap.dedent("""
        class A:
            def ok(self, x: int, y: Mapping[str, Tensor]) -> list[FrameResult]: ...
            def takes(self, x: dict[str, Any]) -> None: ...
            def gives(self) -> Dict: ...
            def bare(self, x) -> int: ...
            def _private(self, x: dict) -> dict: ...
    """)).body[0]
    assert _violations("A", [source], set()) == ["A.takes(x: dict[str, Any])", "A.gives -> Dict", "A.bare(x: None)"]
