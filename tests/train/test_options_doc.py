"""docs/api.md's options table is what the registry declares (regenerate it with
``python scripts/options_table.py --write`` when an option changes)."""
from pathlib import Path

from ffkernels.train import load_algorithms
from ffkernels.train.options import options_markdown

API_DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def test_api_doc_lists_every_option():
    text = API_DOC.read_text()
    start = text.index("<!-- options-table:")
    start = text.index("\n", start) + 1
    end = text.index("<!-- /options-table -->")
    assert text[start:end] == options_markdown(load_algorithms()), \
        "docs/api.md's options table is stale: run python scripts/options_table.py --write"
