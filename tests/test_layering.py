"""Layering: the runtime never imports the lab (:mod:`vsr_pipeline.train`).

The runtime is every module of the package outside ``train/``, found by walking the package
folder (a new module is covered without touching this test), except ``cli.py``, which imports
the training commands lazily inside them, and ``__main__.py``, which runs the command line when
imported. Each top-level folder or module is imported in a fresh interpreter in which any import
of ``vsr_pipeline.train`` (or below) raises ImportError; a failure names the folder, the module
and the line that asked for training code (an import caught by a ``try`` still counts).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import vsr_pipeline

PACKAGE = Path(vsr_pipeline.__file__).resolve().parent
#: Top-level entries that are not runtime: the lab, and the command line (see the module docstring).
NOT_RUNTIME = {"train", "cli.py", "__main__.py"}

#: Run as ``python -c PROBE MODULE...``: blocks ``vsr_pipeline.train``, imports each module and
#: prints, as JSON, ``{module: {"train": [[name, "file:line"], ...], "error": str | None}}`` for
#: every module that asked for training code or failed to import.
PROBE = textwrap.dedent(
    r'''
    import importlib, json, os, sys, traceback

    BLOCKED = "vsr_pipeline.train"
    IMPORTLIB = os.path.dirname(importlib.__file__)
    asked = []


    class BlockTrain:
        """Meta path finder: any import of vsr_pipeline.train (or below) raises ImportError."""

        def find_spec(self, name, path=None, target=None):
            if name == BLOCKED or name.startswith(BLOCKED + "."):
                frames = [f for f in traceback.extract_stack()[:-1] if not f.filename.startswith("<") and not f.filename.startswith(IMPORTLIB)]
                asked.append([name, f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"])
                raise ImportError(f"{name} is training code: the runtime must not import it")
            return None


    for loaded in [m for m in sys.modules if m == BLOCKED or m.startswith(BLOCKED + ".")]:
        del sys.modules[loaded]
    sys.meta_path.insert(0, BlockTrain())

    report = {}
    for module in sys.argv[1:]:
        before = len(asked)
        try:
            importlib.import_module(module)
            error = None
        except BaseException as exc:  # noqa: BLE001 (SystemExit too: a module must not run anything)
            error = f"{type(exc).__name__}: {exc}"
        if error is not None or len(asked) > before:
            report[module] = {"train": asked[before:], "error": error}
    print(json.dumps(report))
    '''
)


def runtime_modules(package: Path = PACKAGE) -> dict[str, list[str]]:
    """The runtime's modules by top-level entry (``faces/``, ``upscaler.py``, ...), dotted names."""
    groups: dict[str, list[str]] = {}
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package)
        if "__pycache__" in rel.parts or rel.parts[0] in NOT_RUNTIME:
            continue
        parts = rel.with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        group = rel.parts[0] + "/" if len(rel.parts) > 1 else rel.parts[0]
        groups.setdefault(group, []).append(".".join((package.name, *parts)))
    return groups


def probe(modules: list[str], *, extra_path: Path | None = None) -> dict[str, dict]:
    """Import ``modules`` in a fresh interpreter with ``vsr_pipeline.train`` blocked (see PROBE)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    roots = [str(PACKAGE.parent)] + ([str(extra_path)] if extra_path is not None else [])
    env["PYTHONPATH"] = os.pathsep.join(roots + [p for p in [env.get("PYTHONPATH")] if p])
    result = subprocess.run([sys.executable, "-c", PROBE, *modules], capture_output=True, text=True, env=env, cwd=PACKAGE.parent, timeout=300)
    assert result.returncode == 0, f"the import probe itself failed:\n{result.stderr[-3000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def describe(group: str, report: dict[str, dict]) -> str:
    lines = []
    for module, found in report.items():
        for name, where in found["train"]:
            lines.append(f"{module} pulls in {name} ({where.removeprefix(str(PACKAGE.parent) + os.sep)})")
        if found["error"] is not None and not found["train"]:
            lines.append(f"{module} does not import, so its imports are unchecked: {found['error']}")
    return f"runtime {group} must not import vsr_pipeline.train:\n  " + "\n  ".join(lines)


GROUPS = runtime_modules()


def test_the_runtime_is_found_by_walking_the_package():
    assert {"faces/", "io/", "run/", "engines/", "models/", "upscaler.py", "__init__.py"} <= set(GROUPS)
    assert not NOT_RUNTIME & {g.rstrip("/") for g in GROUPS}
    assert "vsr_pipeline.faces.track" in GROUPS["faces/"] and "vsr_pipeline" in GROUPS["__init__.py"]
    assert all(m.startswith("vsr_pipeline") and not m.startswith("vsr_pipeline.train") for ms in GROUPS.values() for m in ms)


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_runtime_never_imports_train(group):
    report = probe(GROUPS[group])
    assert not report, describe(group, report)


def test_the_probe_names_a_module_that_pulls_in_train(tmp_path):
    """The check can fail: a module importing training code is named with the file and line of
    the import, also when it reaches it through another module or swallows the ImportError; the
    modules beside it pass."""
    (tmp_path / "planted_caught.py").write_text("import os\n\ntry:\n    import vsr_pipeline.train.trainer\nexcept ImportError:\n    pass\n")
    (tmp_path / "planted_direct.py").write_text("from vsr_pipeline.train import trainer\n")
    (tmp_path / "planted_via.py").write_text("from vsr_pipeline import colour\nimport planted_direct\n")
    report = probe(["vsr_pipeline.colour", "planted_caught", "planted_via"], extra_path=tmp_path)
    assert set(report) == {"planted_caught", "planted_via"}, report
    assert report["planted_caught"] == {"train": [["vsr_pipeline.train", f"{tmp_path / 'planted_caught.py'}:4"]], "error": None}
    assert report["planted_via"]["train"] == [["vsr_pipeline.train", f"{tmp_path / 'planted_direct.py'}:1"]]
    assert report["planted_via"]["error"].startswith("ImportError")
    message = describe("planted/", report)
    assert "runtime planted/" in message and "planted_via pulls in vsr_pipeline.train (" in message
