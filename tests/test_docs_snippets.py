"""Every Python snippet of the README and docs/ runs: the README's blocks in order in one session (each block may
use what an earlier one defined, as a reader would), each docs page on its own. A snippet that raises fails
here, so the documentation cannot drift from the API."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _blocks(path: Path) -> list[tuple[int, str]]:
    text = path.read_text()
    return [(text[: m.start()].count("\n") + 1, m.group(1)) for m in re.finditer(r"```python\n(.*?)```", text, re.S)]


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if _blocks(p)], ids=lambda p: p.name)
def test_every_snippet_runs(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # snippets that write (runs/...) write here
    namespace: dict = {"__name__": "__snippet__"}
    for line, code in _blocks(page):
        if page.name == "README.md" and "epochs=60" in code:  # the training example, shortened (same call)
            code = code.replace("epochs=60", "epochs=2")
        try:
            exec(compile(code, f"{page.name}:{line}", "exec"), namespace)  # noqa: S102 - our own documentation
        except Exception as exc:  # noqa: BLE001 - name the block that fails
            pytest.fail(f"{page.name}, the snippet at line {line} raises {type(exc).__name__}: {exc}")


def test_the_study_pages_are_rendered_from_the_committed_run_record():
    """docs/study.md and the README's verdict table are exactly what scripts/study_docs.py renders from
    docs/study-record.json (the claims, numbers and readings of the make demo run it was written from): no
    documented number is typed by hand, and the README cannot drift from docs/study.md."""
    import json
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import study_docs
    finally:
        sys.path.pop(0)
    record = json.loads((ROOT / "docs" / "study-record.json").read_text())
    text, table = study_docs.render(record, "study")
    assert (ROOT / "docs" / "study.md").read_text() == text
    readme = (ROOT / "README.md").read_text()
    assert readme[readme.index(study_docs.BEGIN): readme.index(study_docs.END) + len(study_docs.END)] == table


def test_the_readme_counts_the_claims_the_study_declares():
    from deepens.study import PARTS

    readme = (ROOT / "README.md").read_text()
    declared = sum(len(p.claims) for p in PARTS.values())
    assert f"tests {declared} claims of the four papers" in readme
    record = (ROOT / "docs" / "study-record.json").read_text()
    import json

    assert len(json.loads(record)["claims"]) == declared  # the committed run has every claim
