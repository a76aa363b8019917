"""Out-of-distribution detection from any score, for many ensembles at once.

Scores (:func:`ood_scores`) are oriented so that **higher means more in-distribution**: ``max_probability``
(of the mean member distribution, Hendrycks & Gimpel 2017), ``neg_entropy`` (−H[p̄]), ``neg_mutual_information``
(−epistemic uncertainty), ``energy`` (T·logsumexp(z̄/T) of the mean member logits, Liu et al. 2020) and
``max_logit`` (of the mean member logits).

:func:`ood_detection` treats the in-distribution samples as the positive class and returns, per leading index,
``auroc`` (area under the ROC curve, ties counted one half — scikit-learn's ``roc_auc_score``), ``aupr_in``
(average precision with in-distribution positive — ``average_precision_score``), ``aupr_out`` (the same with
the OOD samples positive and the score negated) and ``fpr95`` (the false-positive rate at the first threshold
whose true-positive rate reaches 95 %). All from one sort of each set per row and binary searches, vectorised
over leading axes.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch

from ..errors import DeepensError, all_finite, check_real
from .uncertainty import member_probabilities, uncertainty_decomposition

__all__ = ["ood_scores", "ood_detection", "SCORES"]

_EULER_GAMMA = 0.57721566490153286060651209008240243

SCORES = ("max_probability", "neg_entropy", "neg_mutual_information", "energy", "max_logit")


def ood_scores(logits: torch.Tensor, *, temperature: float = 1.0) -> dict[str, torch.Tensor]:
    """Every score of :data:`SCORES` for member logits ``(..., M, B, C)``; each ``(..., B)``, higher = more
    in-distribution."""
    z = torch.as_tensor(logits)
    t = check_real("temperature", temperature, low=0.0, low_open=True)
    parts = uncertainty_decomposition(member_probabilities(z, logits=True, temperature=t))
    return scores_from(parts, z.double(), t)


def scores_from(parts: dict, logits: torch.Tensor, temperature: float = 1.0) -> dict[str, torch.Tensor]:
    """The scores of :data:`SCORES` from an :func:`uncertainty_decomposition` of member probabilities and the
    member logits ``(..., M, B, C)`` (float64) they came from."""
    mean_logits = logits.mean(-3)
    return {"max_probability": parts["confidence"], "neg_entropy": -parts["total"],
            "neg_mutual_information": -parts["epistemic"],
            "energy": temperature * torch.logsumexp(mean_logits / temperature, dim=-1),
            "max_logit": mean_logits.max(-1).values}


def _check(name: str, x) -> torch.Tensor:
    """Scores in their own floating dtype (sorting and tie detection are exact in it; sums are float64)."""
    x = torch.as_tensor(x)
    if not x.is_floating_point():
        x = x.double()
    if x.dim() < 1 or x.shape[-1] < 1:
        raise DeepensError(f"{name}: expected scores of shape (..., N) with N >= 1, got {tuple(x.shape)}")
    if not all_finite(x):
        raise DeepensError(f"{name}: non-finite scores (NaN or inf)")
    return x


def sorted_rows(x: torch.Tensor) -> torch.Tensor:
    """A copy of ``x`` sorted ascending along its last axis. On the CPU, NumPy's vectorised sort of blocks of rows
    in place, one block per intra-op thread (2-5x faster than ``torch.sort`` here); elsewhere ``torch.sort``."""
    rows = x.reshape(-1, x.shape[-1])
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64) or rows.numel() < 2**15:
        return torch.sort(x, dim=-1).values
    out = rows.detach().clone()
    array = out.numpy()
    workers = max(1, min(torch.get_num_threads(), rows.shape[0]))
    edges = [round(i * rows.shape[0] / workers) for i in range(workers + 1)]
    if workers == 1:
        array.sort(axis=-1)
    else:
        with ThreadPoolExecutor(workers) as pool:  # NumPy releases the GIL while it sorts
            list(pool.map(lambda i: array[edges[i]: edges[i + 1]].sort(axis=-1), range(workers)))
    return out.reshape(x.shape)


def _tie_groups(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The tied values of rows ``(R, n)`` sorted ascending, as a sparse table: every member of a group of equal
    values (flat position r·n + k, increasing) with the flat positions of its group's first and last element.
    Untied elements are absent: for them #(smaller) = k and #(smaller or equal) = k + 1."""
    n = a.shape[-1]
    rows, cols = (a[:, 1:] == a[:, :-1]).nonzero(as_tuple=True)
    tied = rows * n + cols + 1  # elements equal to their predecessor
    first = torch.ones(tied.shape, dtype=torch.bool)
    first[1:] = tied[1:] != tied[:-1] + 1  # first continuation of a group (rows never merge: k = 0 is never one)
    start = torch.where(first, tied - 1, 0).cummax(0).values
    closes = torch.ones_like(first)
    closes[:-1] = first[1:]
    end = tied[closes][first.cumsum(0) - 1]
    members = torch.cat([tied, tied[first] - 1])
    order = torch.argsort(members)
    return members[order], torch.cat([start, tied[first] - 1])[order], torch.cat([end, end[first]])[order]


def _precision(tp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    return tp / (tp + fp)


def _sum_by_row(values: torch.Tensor, flat: torch.Tensor, n: int, rows: int) -> torch.Tensor:
    return torch.zeros(rows, dtype=torch.float64).index_add_(0, flat // n, values)


def ood_detection(score_in, score_out) -> dict[str, torch.Tensor]:
    """AUROC, AUPR-in, AUPR-out and FPR at 95 % TPR of in-distribution ``score_in`` (..., N_in) against
    ``score_out`` (..., N_out) (leading axes broadcast); values of shape (...) in float64.

    Each set is sorted on its own; the curves follow from counts: for an OOD score o, R(o) = #(in ≤ o) (one
    binary search into the sorted in-distribution scores) and L(o) = #(in < o); AUROC = Σ_o [#(in > o) + ½ #(in =
    o)] / (N_in N_out) (the Mann-Whitney statistic, equal to the ROC trapezoids with ties); AUPR-in = the mean
    over in-distribution scores s of the precision TP/(TP + FP) at threshold s, TP = #(in ≥ s), FP = #(out ≥ s) =
    #{o : R(o) ≥ #(in ≤ s)}; AUPR-out the same with the roles and the order reversed; FPR95 = #(out ≥ v)/N_out at
    the k-th largest in-distribution score v, k the least count whose TPR k/N_in reaches 0.95 (less 1e-12). Every
    sum runs over untied elements in closed form and is corrected on the (few) tied ones."""
    s_in, s_out = _check("score_in", score_in), _check("score_out", score_out)
    lead = torch.broadcast_shapes(s_in.shape[:-1], s_out.shape[:-1])
    n_pos, n_neg = s_in.shape[-1], s_out.shape[-1]
    dtype = torch.promote_types(s_in.dtype, s_out.dtype)
    a = sorted_rows(s_in.to(dtype).expand(*lead, n_pos).cpu()).reshape(-1, n_pos)
    b = sorted_rows(s_out.to(dtype).expand(*lead, n_neg).cpu()).reshape(-1, n_neg)
    rows = a.shape[0]
    in_tied, in_start, in_end = _tie_groups(a)
    out_tied, _, out_end = _tie_groups(b)
    right = torch.searchsorted(a, b, right=True)  # R(o) = #(in <= o), (rows, n_neg)

    # AUROC: L(o) = R(o) unless o equals in-distribution scores; then the start of their group
    last = (right - 1).clamp_min(0)
    tie = (right > 0) & (a.gather(1, last) == b)
    left = right.clone()
    if bool(tie.any()):
        r_tie, j_tie = tie.nonzero(as_tuple=True)
        q = r_tie * n_pos + last[r_tie, j_tie]
        start = q
        if len(in_tied):  # q in a group of tied in-distribution scores: the group's first element
            i = torch.searchsorted(in_tied, q).clamp_max(len(in_tied) - 1)
            start = torch.where(in_tied[i] == q, in_start[i], q)
        left[r_tie, j_tie] = start - r_tie * n_pos
    pairs = (2 * (n_pos - right) + (right - left)).sum(-1)  # twice the Mann-Whitney count
    auroc = pairs.double() / (2.0 * n_pos * n_neg)

    # AUPR-in: FP(s) = #{o : R(o) >= #(in <= s)}. Untied, the k-th smallest in-distribution score has TP = N_in - k
    # and FP = N_out - #(R <= k): constant, = N_out - j, for k in [R_(j-1), R_j), where Σ t/(t + f) over a run of
    # t is a difference of harmonic numbers H (exact to rounding: H_m = ψ(m + 1) + γ).
    top = n_pos + n_neg
    harmonic = torch.special.digamma(torch.arange(1, top + 2, dtype=torch.float64)) + _EULER_GAMMA
    harmonic[0] = 0.0
    bounds = torch.cat([torch.zeros(rows, 1, dtype=torch.int64), right, torch.full((rows, 1), n_pos)], dim=1)
    lo, hi = bounds[:, :-1], bounds[:, 1:]
    f = n_neg - torch.arange(n_neg + 1, dtype=torch.int64)
    runs = (hi - lo).double() - f * (harmonic[n_pos - lo + f] - harmonic[n_pos - hi + f])
    aupr_in = runs.sum(-1)
    if len(in_tied):
        key = (right + torch.arange(rows, dtype=torch.int64).unsqueeze(1) * (n_pos + 1)).reshape(-1)  # increasing

        def fp(r: torch.Tensor, upto: torch.Tensor) -> torch.Tensor:
            """N_out - #(R <= upto - 1) in row r."""
            return (n_neg - (torch.searchsorted(key, r * (n_pos + 1) + upto - 1, right=True) - r * n_neg)).double()

        r = in_tied // n_pos
        k = in_tied - r * n_pos
        below, upto = in_start - r * n_pos, in_end - r * n_pos + 1
        aupr_in += _sum_by_row(_precision((n_pos - below).double(), fp(r, upto))
                               - _precision((n_pos - k).double(), fp(r, k + 1)), in_tied, n_pos, rows)
    aupr_in = aupr_in / n_pos

    # AUPR-out (OOD positive, score negated): TP = #(out <= o), FP = R(o)
    j = torch.arange(1, n_neg + 1, dtype=torch.float64)
    aupr_out = _precision(j, right.double()).sum(-1)
    if len(out_tied):
        r = out_tied // n_neg
        local = out_tied - r * n_neg
        found = right.reshape(-1)[out_tied].double()
        aupr_out += _sum_by_row(_precision((out_end - r * n_neg + 1).double(), found)
                                - _precision((local + 1).double(), found), out_tied, n_neg, rows)
    aupr_out = aupr_out / n_neg

    counts = torch.arange(1, n_pos + 1, dtype=torch.float64)
    least = int(torch.argmax((counts / n_pos >= 0.95 - 1e-12).to(torch.int8)))  # index of the least count reaching it
    v = a[:, n_pos - 1 - least].unsqueeze(-1).contiguous()
    fpr95 = (n_neg - torch.searchsorted(b, v)).squeeze(-1).double() / n_neg
    return {k_: x.reshape(lead) for k_, x in
            {"auroc": auroc, "aupr_in": aupr_in, "aupr_out": aupr_out, "fpr95": fpr95}.items()}
