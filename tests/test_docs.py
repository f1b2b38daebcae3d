"""The documentation against the code: the quick start runs as written, and every page the
code's comments cite exists."""

import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CITING = ["cpp/include/ntkcore", "cpp/bindings", "python/ntkcore", "tests", "bench", "examples", "tools"]

if not DOCS.is_dir():  # an installed test suite without the source tree
    pytest.skip("docs/ is not beside the tests", allow_module_level=True)


def test_quickstart_runs_as_written():
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / "quickstart.md").read_text(), re.S)
    assert len(blocks) >= 5
    ns: dict = {}
    for block in blocks:
        exec(compile(block, str(DOCS / "quickstart.md"), "exec"), ns)
    n, m = len(ns["x"]), len(ns["x_test"])
    assert ns["k"].nngp.shape == ns["k"].ntk.shape == (n, n)
    assert ns["k32"].ntk.dtype == np.float32
    assert ns["out"].train.shape == (2, n, 2) and ns["out"].test.shape == (2, m, 2)
    assert ns["g"].mean.shape == (m, 2) and ns["g"].covariance.shape == (m, m)
    assert ns["values"].shape == ns["top"].shape == (10,)
    np.testing.assert_allclose(ns["top"], ns["values"], rtol=1e-8)


def test_every_cited_page_exists():
    cited = set()
    for folder in CITING:
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in {".py", ".hpp", ".cpp", ".md"} and path.is_file() and path != Path(__file__).resolve():
                cited.update(re.findall(r"docs/[\w./-]*?\.md", path.read_text(encoding="utf-8")))
    for text in (ROOT / "README.md").read_text(encoding="utf-8"), (DOCS / "index.md").read_text(encoding="utf-8"):
        cited.update(re.findall(r"docs/[\w./-]*?\.md", text))
    assert "docs/math/3a-collinearity.md" in cited  # the scan found the code's references
    missing = sorted(page for page in cited if not (ROOT / page).is_file())
    assert not missing, f"cited but missing: {missing}"
