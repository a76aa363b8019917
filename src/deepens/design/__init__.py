"""Collegial ensemble design (CE §3, Algorithms 1-2): module families with exact parameter / FLOP
counts and fan-ins, Monte Carlo NTK statistics over initialisations, the fit of α, and the primal /
dual optimal (m, n)."""

from .alpha import AlphaFit, default_fit_widths, fit_alpha, fit_log_linear, plot_alpha_fit
from .counting import count_flops, count_parameters
from .families import TERMS, BottleneckFamily, Family, FanIn, MLPFamily, ResNeXt29Family, family_from_name
from .search import (
    Candidate,
    CollegialDesign,
    DesignCurves,
    alpha_interval_for_width,
    collegial_design,
    design_curves,
    plot_design,
)
from .statistics import NTKStatistics, ntk_draws, ntk_statistics

__all__ = [
    "Family",
    "FanIn",
    "MLPFamily",
    "BottleneckFamily",
    "ResNeXt29Family",
    "family_from_name",
    "TERMS",
    "count_parameters",
    "count_flops",
    "NTKStatistics",
    "ntk_draws",
    "ntk_statistics",
    "AlphaFit",
    "fit_alpha",
    "fit_log_linear",
    "default_fit_widths",
    "plot_alpha_fit",
    "Candidate",
    "DesignCurves",
    "CollegialDesign",
    "design_curves",
    "collegial_design",
    "alpha_interval_for_width",
    "plot_design",
]
