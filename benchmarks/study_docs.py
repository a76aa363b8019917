"""Write docs/study.md and docs/figures/study_*.png from a finished study folder (``make demo`` leaves one in
runs/study):

    python -m benchmarks.study_docs [--from runs/study]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from deepens.io import atomic_write_text
from deepens.study import load_study

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def render(study: dict) -> str:
    c, v = study["config"], study["versions"]
    total = sum(p["seconds"] for p in study["parts"].values())
    lines = [
        "# The embedded-ensemble study, measured",
        "",
        f"Written by `python -m benchmarks.study_docs` from `deepens study --{c['preset']}` on {c['dataset']} "
        f"(reference MLP {c['widths']}, {c['epochs']} epochs, batch {c['batch_size']}, SGD lr {c['lr']:g} "
        f"{c['schedule']}, weight decay {c['weight_decay']:g}, seed {c['seed']}); {total:.0f} s of parts on "
        f"{v['cpu_threads']} CPU threads, torch {v['torch']}. The same numbers, figures and the paper's claims are "
        "in the study's report.html; every number is in its results.json and CSV tables.",
        "",
        "Scale caveat: 1797 digits (360 test images: one image is 0.28 % of accuracy), networks of ~10⁴–10⁶ "
        "parameters and 20 epochs on a CPU, against CIFAR-100 and VGG-like networks in the papers. Effects of a "
        "few tenths of a percent are within the noise of one seed.",
        "",
    ]
    for p in study["parts"].values():
        lines += [f"## {p['title']}", "", f"*The paper:* {p['claim']}", "", "*This run:*", ""]
        lines += [f"- {s}" for s in p["reading"]]
        lines += [""] + [f"![{p['title']}](figures/study_{Path(f).name})" for f in p["figures"]]
        lines += ["", f"Run time {p['seconds']:.0f} s, {p['trainings']} trainings.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source", default=str(ROOT / "runs" / "study"), help="the study folder")
    args = parser.parse_args(argv)
    source = Path(args.source)
    study = load_study(source)
    (DOCS / "figures").mkdir(parents=True, exist_ok=True)
    for p in study["parts"].values():
        for f in p["figures"]:
            shutil.copyfile(source / f, DOCS / "figures" / f"study_{Path(f).name}")
    atomic_write_text(DOCS / "study.md", render(study))
    print(f"wrote {DOCS / 'study.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
