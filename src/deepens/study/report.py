"""The study's ``report.html``: one self-contained page (figures embedded as data URIs, inline CSS, no
scripts), one section per part with its figure, a plain-language reading of the numbers, the paper's
corresponding claim, the configuration, the run time and the software versions."""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
from pathlib import Path

from ..io import atomic_write_text
from .parts import PARTS

__all__ = ["render_report", "write_report"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d2230}
main{max-width:1180px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:1.7em;margin:.2em 0}h2{margin-top:0;font-size:1.3em}
.sub{color:#5b6475;margin-bottom:18px}
section{background:#fff;border-radius:10px;box-shadow:0 1px 3px rgba(0,0,0,.08);padding:20px 24px;margin:18px 0}
img{max-width:100%;height:auto;display:block;margin:10px auto;border:1px solid #eceef2;border-radius:6px}
.cols{display:grid;grid-template-columns:1fr 1fr;gap:18px}
@media (max-width:820px){.cols{grid-template-columns:1fr}}
.found{background:#eef7f0;border-left:4px solid #2e8b57;padding:10px 14px;border-radius:4px}
.claim{background:#f1f3fb;border-left:4px solid #4a5fc1;padding:10px 14px;border-radius:4px}
.found h3,.claim h3{margin:.1em 0 .4em;font-size:1em}
ul{margin:.2em 0;padding-left:1.2em}li{margin:.25em 0}
table{border-collapse:collapse;width:100%;font-size:.92em}
td,th{border-bottom:1px solid #e5e7eb;padding:6px 8px;text-align:left;vertical-align:top}
th{background:#fafbfc}
details{margin-top:10px;color:#39404f}summary{cursor:pointer}
pre{background:#f6f8fa;padding:10px;border-radius:6px;overflow:auto;font-size:.85em}
.meta{color:#5b6475;font-size:.9em}.missing{color:#a33}
"""


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def render_report(study: dict, folder: str | Path) -> str:
    """The report's HTML for ``study`` (as :func:`deepens.study.load_study` returns it); figures are read
    from ``folder``."""
    folder = Path(folder)
    config, versions, parts = study["config"], study.get("versions", {}), study["parts"]
    total = sum(p["seconds"] for p in parts.values())
    e = html.escape
    head = (f"<h1>deepens study — embedded ensembles on {e(str(config['dataset']))}</h1>"
            f"<div class='sub'>Preset <b>{e(str(config['preset']))}</b>, {len(parts)} of {len(PARTS)} parts, "
            f"{_minutes(total)} of training and analysis on {e(str(config['device']))}; reference network "
            f"{e(str(config['model']).upper())} with hidden widths {e(str(config['widths']))}, {config['epochs']} "
            f"epochs. Written {e(_dt.datetime.now().strftime('%Y-%m-%d %H:%M'))}.</div>")
    glance = ["<section><h2>At a glance</h2><table><tr><th>part</th><th>finding</th><th>time</th></tr>"]
    for name, p in parts.items():
        glance.append(f"<tr><td><a href='#{e(name)}'>{e(p['title'])}</a></td><td>{e(p.get('headline', ''))}</td>"
                      f"<td>{_minutes(p['seconds'])}</td></tr>")
    missing = [PARTS[n].title for n in PARTS if n not in parts]
    glance.append("</table>")
    if missing:
        glance.append(f"<p class='missing'>Not run: {e(', '.join(missing))}.</p>")
    glance.append("<p class='meta'>Scale caveat: small networks on a small dataset and short training, on a CPU; the "
                  "papers use CIFAR-scale data and networks. Read effects and trends, not absolute numbers.</p>"
                  "</section>")
    sections = []
    for name, p in parts.items():
        figures = "".join(_img(folder / f, p["title"]) for f in p.get("figures", []) if (folder / f).exists())
        reading = "".join(f"<li>{e(s)}</li>" for s in p.get("reading", []))
        tables = ", ".join(f"<a href='tables/{e(t)}.csv'>{e(t)}.csv</a>" for t in p.get("tables", {}))
        sections.append(
            f"<section id='{e(name)}'><h2>{e(p['title'])}</h2>{figures}"
            f"<div class='cols'><div class='found'><h3>What this run found</h3><ul>{reading}</ul></div>"
            f"<div class='claim'><h3>What the paper says</h3><p>{e(p['claim'])}</p></div></div>"
            f"<p class='meta'>Run time {_minutes(p['seconds'])}, {p.get('trainings', 0)} trainings. "
            f"Tables: {tables or '—'}.</p>"
            f"<details><summary>Configuration of this part</summary><pre>{e(json.dumps(p['config'], indent=1))}"
            f"</pre></details></section>")
    foot = ("<section><h2>Software</h2><table>" + "".join(
        f"<tr><td>{e(str(k))}</td><td>{e(str(v))}</td></tr>" for k, v in versions.items()) + "</table>"
        f"<details><summary>Full study configuration</summary><pre>{e(json.dumps(config, indent=1))}</pre>"
        "</details></section>")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>deepens study — {e(str(config['dataset']))}</title><link rel='icon' href='data:,'>"
            f"<style>{_CSS}</style></head><body><main>{head}{''.join(glance)}{''.join(sections)}{foot}</main>"
            "</body></html>\n")


def write_report(study: dict, folder: str | Path) -> Path:
    """Write ``report.html`` into ``folder`` atomically and return its path."""
    folder = Path(folder)
    return atomic_write_text(folder / "report.html", render_report(study, folder))
