"""torch.compile of the layers' forward: no graph break, cold (in a fresh process, before any op
has run, so nothing is imported or cached yet), and the compiled forward equals the eager one."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

SCRIPT = r"""
import json, torch, ffkernels
from ffkernels import Graph
from ffkernels.nn import FFGCNConv, FFSAGEConv
torch.manual_seed(0)
g = Graph.from_edge_index(torch.randint(0, 50, (2, 300)), 50)
x = torch.randn(50, 16)
out = {}
for cls in (FFGCNConv, FFSAGEConv):
    conv = cls(16, 8)
    torch._dynamo.reset()
    ex = torch._dynamo.explain(conv)(x, g)
    compiled = torch.compile(conv, backend="eager", fullgraph=True)
    same = torch.allclose(compiled(x, g), conv(x, g), rtol=1e-6, atol=1e-6)
    out[cls.__name__] = {"breaks": ex.graph_break_count, "graphs": ex.graph_count, "same": bool(same),
                         "reasons": [b.reason[:200] for b in ex.break_reasons]}
print("@@" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def explained():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("@@")][-1]
    return json.loads(line[2:])


@pytest.mark.parametrize("layer", ["FFGCNConv", "FFSAGEConv"])
def test_cold_compile_has_no_graph_break(explained, layer):
    result = explained[layer]
    assert result["breaks"] == 0, result["reasons"]
    assert result["graphs"] == 1
    assert result["same"]
