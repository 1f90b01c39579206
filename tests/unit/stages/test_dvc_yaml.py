"""dvc.yaml and dvc.lock against the code: each stage's code deps are exactly the project modules
it imports, and the committed lock describes the committed code and params (so a teammate's
`dvc pull` + `dvc repro` runs nothing, and a change to a module re-runs exactly the stages that
import it)."""

from __future__ import annotations

import ast
import hashlib
import re
import subprocess
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from conftest import REPO_ROOT

PROJECT_PACKAGES = ("mnist_pipeline", "stages")
STAGE_MODULE = re.compile(r"python -m (stages\.\w+)")
VARIABLE = re.compile(r"\$\{([\w.]+)\}")


def load_yaml(path: Path) -> dict:
    return YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))


def module_file(module: str, root: Path = REPO_ROOT) -> Path | None:
    """The project file a dotted module name is, or None for anything outside the project."""
    if module.split(".")[0] not in PROJECT_PACKAGES:
        return None
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Every module an import statement anywhere in the file names, function bodies included
    (the stages import slow libraries lazily): `from a import b` counts as `a.b` too, since b
    may be a module."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def project_imports(entry: Path, root: Path = REPO_ROOT) -> set[str]:
    """The project's files `entry` runs, itself included, following imports transitively.
    Package `__init__.py` files hold only a docstring (checked below), so they are left out."""
    seen: set[Path] = set()
    pending = [entry]
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in imported_modules(path):
            found = module_file(module, root)
            if found is not None and found not in seen:
                pending.append(found)
    return {
        path.relative_to(root).as_posix() for path in seen if path.name != "__init__.py"
    }


def resolve(text: str, variables: dict) -> str:
    def value(match: re.Match) -> str:
        node = variables
        for key in match.group(1).split("."):
            node = node[key]
        return str(node)

    return VARIABLE.sub(value, text)


def pipeline() -> dict[str, dict]:
    """dvc.yaml's stages with their variables substituted."""
    spec = load_yaml(REPO_ROOT / "dvc.yaml")
    variables = {key: value for entry in spec["vars"] for key, value in entry.items()}
    stages = {}
    for name, stage in spec["stages"].items():
        stages[name] = {
            "cmd": resolve(" ".join(stage["cmd"].split()), variables),
            "deps": [resolve(dep, variables) for dep in stage["deps"]],
            "outs": [
                resolve(next(iter(out)) if isinstance(out, dict) else out, variables)
                for kind in ("outs", "metrics", "plots")
                for out in stage.get(kind, [])
            ],
            "params": stage.get("params", []),
        }
    return stages


STAGES = pipeline()


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_code_deps_are_exactly_the_modules_the_stage_imports(stage):
    spec = STAGES[stage]
    module = STAGE_MODULE.search(spec["cmd"]).group(1)
    imported = project_imports(module_file(module))
    listed = {dep for dep in spec["deps"] if dep.endswith(".py")}
    missing, extra = sorted(imported - listed), sorted(listed - imported)
    assert not missing, f"{stage} imports {missing} but dvc.yaml does not list them"
    assert not extra, f"{stage} lists {extra} in dvc.yaml but never imports them"


def test_import_graph_follows_lazy_and_from_imports(tmp_path):
    """The walker itself, on a made-up project: a function-level import and a `from package
    import module` are followed, outside modules are not."""
    package = tmp_path / "mnist_pipeline"
    package.mkdir()
    (package / "__init__.py").write_text('"""doc"""\n')
    (package / "used.py").write_text("import numpy\nfrom mnist_pipeline import deeper\n")
    (package / "deeper.py").write_text("def f():\n    import mnist_pipeline.lazy\n")
    (package / "lazy.py").write_text("")
    (package / "unused.py").write_text("")
    stages = tmp_path / "stages"
    stages.mkdir()
    (stages / "s.py").write_text("from mnist_pipeline.used import something\n")
    assert project_imports(stages / "s.py", tmp_path) == {
        "stages/s.py",
        "mnist_pipeline/used.py",
        "mnist_pipeline/deeper.py",
        "mnist_pipeline/lazy.py",
    }


PACKAGE_INITS = sorted(
    path.relative_to(REPO_ROOT).as_posix()
    for package in PROJECT_PACKAGES
    for path in (REPO_ROOT / package).rglob("__init__.py")
)


@pytest.mark.parametrize("init", PACKAGE_INITS)
def test_package_inits_hold_only_a_docstring(init):
    """Importing any module runs its package's (and subpackages') __init__.py, which no stage
    lists as a dep."""
    tree = ast.parse((REPO_ROOT / init).read_text(encoding="utf-8"))
    assert len(tree.body) <= 1 and all(
        isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in tree.body
    )


# --- The committed lock --------------------------------------------------------------------


def tracked_files() -> set[str]:
    listed = subprocess.run(
        ["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout
    return set(listed.splitlines())


def param_value(params: dict, dotted: str):
    node = params
    for key in dotted.split("."):
        node = node[key]
    return node


LOCK = load_yaml(REPO_ROOT / "dvc.lock")["stages"]


def test_the_lock_has_every_stage_with_its_command_deps_and_outputs():
    assert sorted(LOCK) == sorted(STAGES), "dvc.lock's stages differ from dvc.yaml's"
    for name, spec in STAGES.items():
        locked = LOCK[name]
        assert " ".join(locked["cmd"].split()) == spec["cmd"], f"{name}: command changed"
        assert sorted(dep["path"] for dep in locked["deps"]) == sorted(spec["deps"]), name
        assert sorted(out["path"] for out in locked["outs"]) == sorted(spec["outs"]), name


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_the_locked_code_is_the_committed_code(stage):
    """After any change to a stage's code, `dvc repro` on the full data refreshes the lock;
    this fails until that refreshed lock is committed."""
    tracked = tracked_files()
    stale = [
        dep["path"]
        for dep in LOCK[stage]["deps"]
        if dep["path"] in tracked
        and hashlib.md5((REPO_ROOT / dep["path"]).read_bytes()).hexdigest() != dep["md5"]
    ]
    assert not stale, f"dvc.lock is stale for {stage}: run `dvc repro` and commit dvc.lock"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_the_locked_params_are_the_committed_params(stage):
    params = load_yaml(REPO_ROOT / "params.yaml")
    locked = LOCK[stage].get("params", {}).get("params.yaml", {})
    assert sorted(locked) == sorted(STAGES[stage]["params"])
    for key, value in locked.items():
        assert param_value(params, key) == value, f"{stage}: params.yaml's {key} changed"


def test_each_data_dep_is_the_output_its_stage_locked():
    """The lock describes one run of the whole pipeline: the file each stage read is the file
    the stage before it wrote."""
    produced = {out["path"]: out["md5"] for stage in LOCK.values() for out in stage["outs"]}
    for name, stage in LOCK.items():
        for dep in stage["deps"]:
            if dep["path"] in produced:
                assert dep["md5"] == produced[dep["path"]], f"{name} read another {dep['path']}"
