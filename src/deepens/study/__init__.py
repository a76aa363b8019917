"""The main job: ``deepens study`` — the experiments of all four papers at small scale, each with its claims
and a verdict computed from a criterion declared before the run, in one resumable run with one report.

Parts are grouped by paper: :mod:`.embedded` (EE), :mod:`.collegial` (CE), :mod:`.equivariance` (EqE) and
:mod:`.powerlaws` (PL); claims and verdicts live in :mod:`.claims`.

    from deepens.study import StudyConfig, run_study
    run_study(StudyConfig.preset_config("quick"), "runs/study", paper="ee,pl")
"""

from .claims import PAPERS, VERDICTS, Claim, Test, evaluate, measure
from .config import PRESETS, StudyConfig
from .parts import PARTS, Part, part_names
from .report import render_markdown, render_report, write_report
from .runner import StudyContext, load_study, run_study, software_versions

__all__ = ["StudyConfig", "PRESETS", "PARTS", "PAPERS", "Part", "part_names", "run_study", "load_study",
           "StudyContext", "render_report", "render_markdown", "write_report", "software_versions", "Claim", "Test",
           "evaluate", "measure", "VERDICTS"]
