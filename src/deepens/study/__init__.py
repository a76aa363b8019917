"""The main job: ``deepens study`` — the Embedded Ensembles experiments (EE §5, App. C–D) and a power-law
pool at small scale, next to the analytic predictions, with a self-contained HTML report.

    from deepens.study import StudyConfig, run_study
    run_study(StudyConfig.preset_config("quick"), "runs/study")
"""

from .config import PRESETS, StudyConfig
from .parts import PARTS, Part, part_names
from .report import render_report, write_report
from .runner import StudyContext, load_study, run_study, software_versions

__all__ = ["StudyConfig", "PRESETS", "PARTS", "Part", "part_names", "run_study", "load_study", "StudyContext",
           "render_report", "write_report", "software_versions"]
