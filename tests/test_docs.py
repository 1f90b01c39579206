"""The README and docs/ stay true: links resolve, the commands they show exist, and the layers
docs/architecture.md draws are the ones the import statements follow."""

from __future__ import annotations

import ast
import contextlib
import io
import re
from pathlib import Path

import pytest

from mnist_pipeline.commands.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
COMMAND = re.compile(r"mnist-pipeline ([a-z][a-z-]*)([^\n`|;&]*)")


def test_the_readme_reads_in_five_minutes():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_relative_link_points_at_a_file(page):
    targets = [link.split("#")[0] for link in LINK.findall(page.read_text())]
    relative = [target for target in targets if target and "://" not in target]
    missing = [target for target in relative if not (page.parent / target).exists()]
    assert not missing, f"{page.name} links to missing files: {missing}"


@pytest.mark.parametrize(
    "page", [p for p in PAGES if p.parent.name == "docs"], ids=lambda p: p.name
)
def test_every_page_opens_with_its_commands(page):
    text = page.read_text()
    first_section = text.find("\n## ")
    assert "\n```" in text[: first_section if first_section > 0 else len(text)]


def subcommand_help() -> dict[str, str]:
    """Each `mnist-pipeline` subcommand's --help text, by its name."""
    parser = build_parser()
    names = re.search(r"\{([a-z,-]+)\}", parser.format_usage()).group(1).split(",")
    helps = {}
    for name in names:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
            parser.parse_args([name, "--help"])
        helps[name] = out.getvalue()
    return helps


def test_every_command_the_docs_show_exists_with_its_options():
    helps = subcommand_help()
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z-]+):", makefile, flags=re.MULTILINE))
    wrong = []
    for page in PAGES:
        text = page.read_text()
        for name, rest in COMMAND.findall(text):
            if name not in helps:
                wrong.append(f"{page.name}: mnist-pipeline {name}")
                continue
            options = re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", rest.split("#")[0])
            wrong += [
                f"{page.name}: mnist-pipeline {name} {option}"
                for option in options
                if option not in helps[name]
            ]
        wrong += [
            f"{page.name}: make {target}"
            for target in re.findall(r"(?<![\w-])make ([a-z][a-z-]*)", text)
            if target not in targets
        ]
    assert not wrong, f"not in `mnist-pipeline ... --help` or the Makefile: {wrong}"


def documented_layers() -> list[str]:
    """The layers of docs/architecture.md, top first: each may import only those below it."""
    page = (ROOT / "docs" / "architecture.md").read_text()
    section = page.split("## The layers", 1)[1]
    block = section.split("```", 2)[1]
    return block.split()


def unit_of(module: str) -> str | None:
    """The folder or top-level module a dotted import belongs to, as the page names it."""
    parts = module.split(".")
    if parts[0] != "mnist_pipeline":
        return f"{parts[0]}/" if parts[0] in ("stages", "team", "benchmarks", "tests") else None
    if len(parts) == 1:
        return "mnist_pipeline/"
    if (ROOT / "mnist_pipeline" / parts[1]).is_dir():
        return f"mnist_pipeline/{parts[1]}/"
    return f"mnist_pipeline/{parts[1]}.py"


def project_imports(unit: str) -> set[str]:
    """What the files of a folder or module import from the project, as units."""
    path = ROOT / unit.rstrip("/")
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
    found = set()
    for file in files:
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            found |= {unit_of(name) for name in names} - {None, unit}
    return found


def test_each_layer_imports_only_the_layers_below_it():
    layers = documented_layers()
    on_disk = {
        unit_of(f"mnist_pipeline.{path.stem}")
        for path in (ROOT / "mnist_pipeline").iterdir()
        if (path.is_dir() and (path / "__init__.py").exists())
        or (path.suffix == ".py" and path.stem != "__init__")
    }
    assert on_disk == set(layers), f"docs/architecture.md's layers: {layers}"
    allowed = {unit: set(layers[index + 1 :]) for index, unit in enumerate(layers)}
    allowed["stages/"] = set(layers[layers.index("mnist_pipeline/tracking/") :])
    allowed["team/"] = set(layers[layers.index("mnist_pipeline/runtime/") :])
    climbs = {
        f"{unit} -> {imported}"
        for unit, may in allowed.items()
        for imported in project_imports(unit) - may
    }
    assert not climbs, f"imports against docs/architecture.md's layers: {sorted(climbs)}"
