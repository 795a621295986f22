"""Package-level contracts: names, import cost and side effects, no import cycles."""
from __future__ import annotations

import ast
import pathlib
import subprocess
import sys
import types

import ffkernels

ROOT = pathlib.Path(ffkernels.__file__).parent


def test_backends_is_the_registry_module_and_available_backends_the_function():
    assert isinstance(ffkernels.backends, types.ModuleType)
    assert ffkernels.backends.__name__ == "ffkernels.backends"
    info = ffkernels.available_backends()
    assert set(info) == {"reference", "cpu", "triton", "cuda"}
    assert info["reference"] == {"available": True, "reason": None}
    assert ffkernels.backends.available() == info
    import pytest
    with pytest.warns(DeprecationWarning, match="available_backends"):
        assert ffkernels.backends() == info  # the old spelling, during the rename


def test_import_registers_the_custom_ops():
    """torch.ops.ffkernels.* exist right after `import ffkernels`, before any op call."""
    code = ("import torch, ffkernels; ok = ffkernels.available_backends()['cpu']['available']; "
            "names = {'aggregate', 'goodness_loss_grad', 'linear_goodness_step', 'sf_loss_grad'}; "
            "print(not ok or all(hasattr(torch.ops.ffkernels, n) for n in names))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True", out.stderr


def _module_imports(path: pathlib.Path, package: str) -> set:
    """Modules of ffkernels that ``path`` imports (at any depth: lazy imports count too)."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m.startswith("ffkernels")}


def test_bench_cli_and_suites_do_not_import_each_other():
    bench = ROOT / "benchmarking"
    for name in ("suite", "ops_suite"):
        path = bench / f"{name}.py"
        if path.exists():
            imported = _module_imports(path, "ffkernels.benchmarking")
            assert not {"ffkernels.bench_cli", "ffkernels.benchmarking.cli"} & imported, (name, imported)
    from ffkernels import bench_cli
    from ffkernels.benchmarking import cli
    assert bench_cli.main is cli.main
