"""Print (or with --write, update in docs/api.md) the table of every algorithm's options."""
import sys
from pathlib import Path

from ffkernels.train import load_algorithms
from ffkernels.train.options import options_markdown

API_DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"

table = options_markdown(load_algorithms())
if "--write" in sys.argv[1:]:
    text = API_DOC.read_text()
    start = text.index("\n", text.index("<!-- options-table:")) + 1
    end = text.index("<!-- /options-table -->")
    API_DOC.write_text(text[:start] + table + text[end:])
else:
    sys.stdout.write(table)
