"""The house's layering check (docs/architecture.md): every emovit module imports only from its
own layer or below, never a private name of another package, and evaluation never imports
training. Imports inside functions count too (they are read from the source, not run)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "emovit"

#: Layers, bottom to top. A top-level name of emovit (module or package) belongs to one.
LAYERS: dict[str, int] = {
    # 1 base
    "errors": 1,
    "labels": 1,
    "imageio": 1,
    "sources": 1,
    "fileio": 1,
    "progress": 1,
    # 2 stages
    "models": 2,
    "preprocess": 2,
    "faces": 2,
    "postprocess": 2,
    "backends": 2,
    "results": 2,
    "data": 2,
    "video": 2,
    "explain": 2,
    # 3 the pipeline
    "predictor": 3,
    # 4 doors
    "evaluation": 4,
    "training": 4,
    "video_output": 4,
    "explain_output": 4,
    "ray": 4,
    "bench": 4,
    "serve": 4,
    "writers": 4,
    # 5 the command line
    "cli": 5,
    "__main__": 5,  # the console script: loads the command line
}
#: (importer, imported) pairs that the layers allow but the design forbids.
FORBIDDEN = {("evaluation", "training")}


def _modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if p.name != "__init__.py" or p.parent != SRC)


def _owner(path: Path) -> tuple[str, tuple[str, ...]]:
    """(top-level name, package parts) of a source file, e.g. ('faces', ('faces',))."""
    parts = path.relative_to(SRC).with_suffix("").parts
    package = parts[:-1]
    return parts[0], package


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, dotted module, imported names) for every import of emovit in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "emovit" or node.module.startswith("emovit."):
                found.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("emovit."):
                    found.append((node.lineno, alias.name, []))
    return found


def _violations(path: Path) -> list[str]:
    top, package = _owner(path)
    if top not in LAYERS:
        return [f"{path.relative_to(SRC)}: module {top!r} is in no layer (add it to the layering check)"]
    out = []
    for line, module, names in _imports(path):
        parts = module.split(".")[1:]
        if not parts:  # `from emovit import X`: the version, or a module
            names = [n for n in names if n != "__version__"]
            if not names:
                continue
            parts, names = [names[0]], []
        target = parts[0] if parts else ""
        where = f"{path.relative_to(SRC)}:{line}"
        if target not in LAYERS:
            out.append(f"{where}: imports {module} (no layer)")
            continue
        if LAYERS[target] > LAYERS[top]:
            out.append(f"{where}: {top} (layer {LAYERS[top]}) imports {module} (layer {LAYERS[target]})")
        if (top, target) in FORBIDDEN:
            out.append(f"{where}: {top} must not import {target}")
        inside = tuple(parts[: len(package)]) == package and len(package) > 0
        private_module = next((p for p in parts if p.startswith("_")), None)
        if private_module and not inside:
            out.append(f"{where}: imports the private module {module} of another package")
        private_names = [n for n in names if n.startswith("_")]
        if private_names and not inside:
            out.append(f"{where}: imports private names {private_names} from {module}")
    return out


def test_every_module_is_checked() -> None:
    assert len(_modules()) > 30


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_layers_hold(path: Path) -> None:
    assert _violations(path) == []


def test_the_check_catches_violations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "emovit"
    (fake / "faces").mkdir(parents=True)
    (fake / "faces" / "bad.py").write_text(
        "from emovit.predictor import EmotionRecognizer\n"
        "def f():\n    from emovit.models._presets import _processor\n"
    )
    (fake / "evaluation.py").write_text("from emovit.training import train\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", fake)
    bad = _violations(fake / "faces" / "bad.py")
    assert any("layer 2) imports emovit.predictor" in v for v in bad)
    assert any("private module emovit.models._presets" in v for v in bad)
    assert any("private names ['_processor']" in v for v in bad)
    assert any("must not import training" in v for v in _violations(fake / "evaluation.py"))
