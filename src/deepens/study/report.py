"""The study's reports: ``report.html`` (one self-contained page: figures embedded as data URIs, inline CSS,
no scripts) and ``report.md`` (the same content as Markdown, figures linked).

Both open with one table of verdicts — paper · claim · the paper's number · the measured number (± over
seeds) · scale · verdict — followed by one section per paper and part: figures, the generated sentence of
every claim, the part's numbers, what it ran, its configuration and run time. Every sentence about a claim
is generated from its verdict and numbers (:func:`deepens.study.claims.claim_sentence`)."""

from __future__ import annotations

import base64
import html
import json
from collections import Counter
from pathlib import Path

from ..io import atomic_write_text
from .claims import PAPERS, VERDICTS, claim_sentence
from .parts import PARTS

__all__ = ["render_report", "render_markdown", "write_report", "verdict_table_markdown"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d2230}
main{max-width:1240px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:1.7em;margin:.2em 0}h2{margin-top:0;font-size:1.3em}h3{font-size:1.1em}
.sub{color:#5b6475;margin-bottom:18px}
section{background:#fff;border-radius:10px;box-shadow:0 1px 3px rgba(0,0,0,.08);padding:20px 24px;margin:18px 0}
img{max-width:100%;height:auto;display:block;margin:10px auto;border:1px solid #eceef2;border-radius:6px}
.found{background:#eef7f0;border-left:4px solid #2e8b57;padding:10px 14px;border-radius:4px;margin:10px 0}
.found h3{margin:.1em 0 .4em;font-size:1em}
ul{margin:.2em 0;padding-left:1.2em}li{margin:.25em 0}
table{border-collapse:collapse;width:100%;font-size:.88em}
td,th{border-bottom:1px solid #e5e7eb;padding:5px 7px;text-align:left;vertical-align:top}
th{background:#fafbfc}
.v{font-weight:600;white-space:nowrap;padding:2px 6px;border-radius:4px}
.v-reproduced{background:#d9f2e1;color:#17603a}.v-partly{background:#fdf0cf;color:#7a5a00}
.v-not-reproduced{background:#f9dcdc;color:#8a1f1f}.v-not-identifiable{background:#e6e8ee;color:#3e4656}
details{margin-top:10px;color:#39404f}summary{cursor:pointer}
pre{background:#f6f8fa;padding:10px;border-radius:6px;overflow:auto;font-size:.85em}
.meta{color:#5b6475;font-size:.9em}.missing{color:#a33}.small{font-size:.85em;color:#5b6475}
"""


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _scale_text(scale: dict) -> str:
    return "; ".join(f"{k} {v}" for k, v in scale.items() if v is not None and v != "")


def _counts(claims: list[dict]) -> str:
    c = Counter(r["verdict"] for r in claims)
    return ", ".join(f"{c[v]} {v}" for v in VERDICTS if c[v]) or "no claims evaluated"


def _v(verdict: str) -> str:
    return f"<span class='v v-{verdict.replace(' ', '-')}'>{html.escape(verdict)}</span>"


def _header(study: dict) -> tuple[str, float]:
    config, parts = study["config"], study["parts"]
    total = sum(p["seconds"] for p in parts.values())
    papers = sorted({p["paper"] for p in parts.values()}, key=list(PAPERS).index)
    finished = [p["finished"] for p in parts.values() if p.get("finished")]
    when = f" Finished {max(finished).replace('T', ' ')}." if finished else ""  # the run's time, not the render's
    return (f"Preset {config['preset']}, {len(parts)} of {len(PARTS)} parts ({', '.join(papers) or 'none'}), "
            f"{_minutes(total)} of training and analysis on {config['device']}, seed {config['seed']}, "
            f"{config['seeds']} seeds per noisy measurement.{when}", total)


def render_report(study: dict, folder: str | Path) -> str:
    """The report's HTML for ``study`` (as :func:`deepens.study.load_study` returns it); figures are read
    from ``folder``."""
    folder = Path(folder)
    config, versions, parts, claims = study["config"], study.get("versions", {}), study["parts"], study["claims"]
    e = html.escape
    sub, _ = _header(study)
    head = (f"<h1>deepens study — four papers, measured</h1><div class='sub'>{e(sub)}</div>")
    table = ["<section id='verdicts'><h2>Verdicts</h2>",
             f"<p>{e(_counts(claims))}. Each verdict is computed from the criterion the part declared before it ran "
             "(reproduced: the criterion holds; partly: only its declared weaker form holds; not identifiable: the "
             "measurement did not reach its declared resolution).</p>",
             "<table><tr><th>paper</th><th>claim</th><th>paper's number</th><th>measured</th><th>scale</th>"
             "<th>verdict</th></tr>"]
    for c in claims:
        table.append(
            f"<tr><td>{e(c['paper'])}</td><td><a href='#{e(c['part'])}'>{e(c['source'])}</a>: {e(c['claim'])}"
            f"<div class='small'>{e(c['quantity'])}; criterion: {e(c['criterion'])}"
            + (f"; partly: {e(c['weaker'])}" if c.get("weaker") else "") + "</div></td>"
            f"<td>{e(c['paper_value'])}</td><td>{e(c['measured_text'])}</td><td class='small'>"
            f"{e(_scale_text(c.get('scale', {})))}</td><td>{_v(c['verdict'])}</td></tr>")
    table.append("</table>")
    missing = [f"{p.paper}.{n}" for n, p in PARTS.items() if n not in parts]
    if missing:
        table.append(f"<p class='missing'>Not run: {e(', '.join(missing))}.</p>")
    table.append("<p class='meta'>Scale caveat: small networks on small datasets, short training, on a CPU; the "
                 "papers use CIFAR-scale data and networks trained for hundreds of epochs. A verdict says what this "
                 "run measured at this scale, not whether the paper is right.</p></section>")
    sections = []
    for paper, title in PAPERS.items():
        mine = [(n, p) for n, p in parts.items() if p["paper"] == paper]
        if not mine:
            continue
        sections.append(f"<section id='paper-{paper}'><h2>{e(title)} ({paper})</h2>"
                        f"<p>{e(_counts([c for c in claims if c['paper'] == paper]))}.</p><ul>"
                        + "".join(f"<li><a href='#{e(n)}'>{e(p['title'])}</a> ({_minutes(p['seconds'])})</li>"
                                  for n, p in mine) + "</ul></section>")
        for name, p in mine:
            figures = "".join(_img(folder / f, p["title"]) for f in p.get("figures", []) if (folder / f).exists())
            said = "".join(f"<li>{_v(c['verdict'])} {e(claim_sentence(c))}</li>" for c in p.get("claims", []))
            reading = "".join(f"<li>{e(s)}</li>" for s in p.get("reading", []))
            tables = ", ".join(f"<a href='tables/{e(t)}.csv'>{e(t)}.csv</a>" for t in p.get("tables", {}))
            sections.append(
                f"<section id='{e(name)}'><h2>{e(p['title'])}</h2><p>{e(p.get('summary', ''))}</p>{figures}"
                f"<div class='found'><h3>Claims</h3><ul>{said or '<li>none declared</li>'}</ul>"
                f"<h3>Numbers</h3><ul>{reading}</ul></div>"
                f"<p class='meta'>Run time {_minutes(p['seconds'])}, {p.get('trainings', 0)} trainings "
                f"({p.get('from_store', 0)} loaded from the store). Tables: {tables or '—'}.</p>"
                f"<details><summary>Configuration of this part</summary><pre>{e(json.dumps(p['config'], indent=1))}"
                f"</pre></details></section>")
    foot = ("<section><h2>Software</h2><table>" + "".join(
        f"<tr><td>{e(str(k))}</td><td>{e(str(v))}</td></tr>" for k, v in versions.items()) + "</table>"
        f"<details><summary>Full study configuration</summary><pre>{e(json.dumps(config, indent=1))}</pre>"
        "</details></section>")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            "<title>deepens study</title><link rel='icon' href='data:,'>"
            f"<style>{_CSS}</style></head><body><main>{head}{''.join(table)}{''.join(sections)}{foot}</main>"
            "</body></html>\n")


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def verdict_table_markdown(claims: list[dict]) -> str:
    """The verdict table as Markdown (the README and docs/study.md embed it)."""
    lines = ["| paper | claim | paper's number | measured | scale | verdict |", "| --- | --- | --- | --- | --- | --- |"]
    for c in claims:
        lines.append(f"| {c['paper']} | {_md(c['source'])}: {_md(c['claim'])} | {_md(c['paper_value'])} | "
                     f"{_md(c['measured_text'])} | {_md(_scale_text(c.get('scale', {})))} | **{c['verdict']}** |")
    return "\n".join(lines)


def render_markdown(study: dict, figure_prefix: str = "") -> str:
    """The report as Markdown; figures are linked as ``figure_prefix + path`` (relative to the study folder)."""
    parts, claims = study["parts"], study["claims"]
    sub, _ = _header(study)
    lines = ["# deepens study — four papers, measured", "", sub, "", "## Verdicts", "",
             f"{_counts(claims)}. Each verdict is computed from the criterion the part declared before it ran.", "",
             verdict_table_markdown(claims), ""]
    for paper, title in PAPERS.items():
        mine = [(n, p) for n, p in parts.items() if p["paper"] == paper]
        if not mine:
            continue
        lines += [f"## {title} ({paper})", "", f"{_counts([c for c in claims if c['paper'] == paper])}.", ""]
        for name, p in mine:
            lines += [f"### {p['title']} (`{name}`)", "", p.get("summary", ""), ""]
            for c in p.get("claims", []):
                lines.append(f"- **{c['verdict']}** — {claim_sentence(c)} Criterion: {c['criterion']}"
                             + (f"; partly: {c['weaker']}" if c.get("weaker") else "")
                             + (f"; identifiable: {c['identifiable']}" if c.get("identifiable") else "")
                             + (f". Note: {c['note']}" if c.get("note") else "") + ".")
            lines += [""] + [f"- {s}" for s in p.get("reading", [])] + [""]
            lines += [f"![{p['title']}]({figure_prefix}{f})" for f in p.get("figures", [])]
            lines += ["", f"Run time {_minutes(p['seconds'])}, {p.get('trainings', 0)} trainings.", ""]
    return "\n".join(lines) + "\n"


def write_report(study: dict, folder: str | Path) -> Path:
    """Write ``report.html`` and ``report.md`` into ``folder`` atomically; returns the HTML's path."""
    folder = Path(folder)
    atomic_write_text(folder / "report.md", render_markdown(study))
    return atomic_write_text(folder / "report.html", render_report(study, folder))
