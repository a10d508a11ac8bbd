"""The package's floors (docs/architecture.md): every module stands on one, imports point only
down or across a floor, and no import circle closes anywhere. Read from the source with ast, so
an import inside a function counts as much as one at the top: what a module may call is what it
depends on."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nanogpt"

# Bottom to top. A module belongs to the floor of the longest prefix that names it.
FLOORS: list[tuple[str, tuple[str, ...]]] = [
    (
        "ground",  # imports nothing of ours but the ground floor itself, and no torch in config
        (
            "nanogpt.version",
            "nanogpt.errors",
            "nanogpt.files",
            "nanogpt.settings",
            "nanogpt.architecture",
            "nanogpt.config",
            "nanogpt.model",
            "nanogpt.optim",
            "nanogpt.metrics",
        ),
    ),
    (
        "core",  # data, the machine, the process group, the run folder's lock, checkpoints
        (
            "nanogpt.data",
            "nanogpt.system",
            "nanogpt.memory",
            "nanogpt.dtype_probe",
            "nanogpt.distributed",
            "nanogpt.fsdp",
            "nanogpt.runlock",
            "nanogpt.checkpoint",
        ),
    ),
    ("use", ("nanogpt.generation", "nanogpt.huggingface", "nanogpt.evaluation", "nanogpt.analysis")),  # what uses a trained model or run
    ("training", ("nanogpt.training",)),
    (
        "commands",  # the only floor that knows Hydra's command line; the package's front door
        ("nanogpt.cli", "nanogpt.train", "nanogpt.sample", "nanogpt.prepare", "nanogpt.export", "nanogpt.eval", "nanogpt.report"),
    ),
]
FRONT_DOOR = "nanogpt"  # nanogpt/__init__.py: Generator and generate, for notebooks; on the top floor


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def floor_of(module: str) -> int:
    if module == FRONT_DOOR:
        return len(FLOORS) - 1
    best = max(
        (
            (len(prefix), level)
            for level, (_, prefixes) in enumerate(FLOORS)
            for prefix in prefixes
            if module == prefix or module.startswith(prefix + ".")
        ),
        default=None,
    )
    if best is None:
        raise AssertionError(f"{module} stands on no floor: add it to FLOORS in tests/test_architecture.py and to docs/architecture.md")
    return best[1]


def imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ours that `module` imports (a `from nanogpt.x import y` of a submodule y names y)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "nanogpt")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "nanogpt" and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
    return {name for name in found if name != module}


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports(name, path, known) for name, path in found.items()}


def test_every_module_stands_on_a_floor():
    for name in modules():
        floor_of(name)


def test_imports_never_point_up_a_floor():
    upward = [
        f"{importer} ({FLOORS[floor_of(importer)][0]}) imports {imported} ({FLOORS[floor_of(imported)][0]})"
        for importer, targets in graph().items()
        for imported in sorted(targets)
        if floor_of(imported) > floor_of(importer)
    ]
    assert not upward, "imports that point up a floor:\n" + "\n".join(upward)


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle (its modules in order, the first repeated at the end), or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_circle():
    cycle = find_cycle(graph())
    assert cycle is None, "an import circle: " + " -> ".join(cycle)


@pytest.mark.parametrize(
    "edges, circle",
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
        ({"a": {"b"}, "b": {"b2"}, "b2": {"b"}}, ["b", "b2", "b"]),
    ],
)
def test_the_circle_finder_finds_circles(edges, circle):
    assert find_cycle(edges) == circle


def test_an_upward_import_is_named(tmp_path, monkeypatch):
    """The floor check on a made-up package: the core importing the command floor is caught."""
    package = tmp_path / "nanogpt"
    (package / "cli").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "cli" / "__init__.py").write_text("")
    (package / "system.py").write_text("def f():\n    from nanogpt.cli import launch\n")
    (package / "cli" / "launch.py").write_text("")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", package)
    with pytest.raises(AssertionError, match=r"nanogpt.system \(core\) imports nanogpt.cli.launch \(commands\)"):
        test_imports_never_point_up_a_floor()


def test_the_configs_and_the_command_lines_checks_load_no_torch():
    """config, the command floor's help and refusals, and the console entry points import no
    torch: a command line is checked, and --help answers, before torch loads."""
    import subprocess
    import sys

    code = (
        "import sys; import nanogpt.config, nanogpt.cli, nanogpt.cli.help, nanogpt.cli.refusals, nanogpt.cli.launch;"
        "import nanogpt.cli.train, nanogpt.cli.sample, nanogpt.cli.export, nanogpt.cli.eval, nanogpt.cli.prepare, nanogpt.cli.report;"
        "nanogpt.cli.launch.register_configs(); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent, check=True).stdout
    assert out.strip() == "False"
