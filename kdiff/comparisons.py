"""Which orderings of scored rows the numbers support: pure functions on metric rows.

A *row* is a mapping with the numbers of one set of samples against one reference:

* ``fid`` and its bootstrap interval ``fid_low`` / ``fid_high``
  (:func:`kdiff.metrics.fid_bootstrap`);
* ``fid_infinity`` (:func:`kdiff.metrics.fid_infinity`) — None where the sample count does
  not support its fit (:func:`kdiff.metrics.fid_infinity_min_samples`): the caller passes
  None rather than an unsupported value;
* ``kid`` (:func:`kdiff.metrics.kernel_inception_distance`, in any one unit);
* optionally ``num_samples`` (FID is biased upwards by about c / N, so raw FIDs order rows
  only at equal counts).

Any of them may be missing or None. Lower is better for all of them. The functions read
nothing else and return plain strings (with the rows' names as given), so any report —
the pipeline's or the survey experiments' — can print them.
"""

from __future__ import annotations

import itertools
import math

__all__ = ["fid_intervals_order", "not_clearly_below", "ordering_statements"]

_KINDS = ("disagreement", "resolved", "within_noise")  # the order of ordering_statements' result


def _number(value):
    """``value`` as a float, or None when it is missing or not finite."""
    if value is None or isinstance(value, bool):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _show(value):
    """A number for a sentence: 3 significant digits, large values in full with commas."""
    return f"{value:.3g}" if abs(value) < 999.5 else f"{value:,.0f}"


def _interval(row):
    """``(low, high)`` of a row's FID interval, or None when it has none."""
    low, high = _number(row.get("fid_low")), _number(row.get("fid_high"))
    return None if low is None or high is None else (low, high)


def _show_interval(interval):
    return f"[{_show(interval[0])}, {_show(interval[1])}]"


def fid_intervals_order(row_a, row_b):
    """Whether two rows' FID bootstrap intervals order them.

    Args:
        row_a: a row (see the module docstring).
        row_b: another row.

    Returns:
        -1 when a's interval lies wholly below b's (a better, resolved), 1 when wholly
        above, 0 when they overlap (touching counts as overlap: the order is within noise),
        None when either row has no interval.
    """
    a, b = _interval(row_a), _interval(row_b)
    if a is None or b is None:
        return None
    if a[1] < b[0]:
        return -1
    if b[1] < a[0]:
        return 1
    return 0


def not_clearly_below(row, baseline):
    """Why ``row`` is not clearly better (lower) than ``baseline`` by FID or FID∞, if it is not.

    "Clearly below" means: the row's FID interval lies wholly below the baseline's (its
    upper end under the baseline's lower end); without intervals, its FID is below the
    baseline's; and, where both have a (supported) FID∞, its FID∞ is below the
    baseline's.

    Args:
        row: the row to check.
        baseline: the baseline's row (e.g. a Gaussian fit to the real pixels).

    Returns:
        None when the row is clearly below, or when the FIDs needed are missing; else a
        sentence saying which numbers are not below (without the row's name).
    """
    reasons = []
    order = fid_intervals_order(row, baseline)
    fid, base_fid = _number(row.get("fid")), _number(baseline.get("fid"))
    if order is not None and order != -1:
        reasons.append(
            f"its FID interval {_show_interval(_interval(row))} is not below the baseline's "
            f"{_show_interval(_interval(baseline))}"
        )
    elif order is None and fid is not None and base_fid is not None and fid >= base_fid:
        reasons.append(f"its FID {_show(fid)} is not below the baseline's {_show(base_fid)}")
    inf, base_inf = _number(row.get("fid_infinity")), _number(baseline.get("fid_infinity"))
    if inf is not None and base_inf is not None and inf >= base_inf:
        reasons.append(f"its FID∞ {_show(inf)} is not below the baseline's {_show(base_inf)}")
    return "; ".join(reasons) if reasons else None


def _fid_comparison(row_a, row_b):
    """``(metric name, a's value, b's value)`` that orders two rows by FID, or None.

    FID∞ where both rows have it; otherwise raw FID when the counts are equal (or not
    given); otherwise None (raw FIDs at different counts carry different biases).
    """
    inf_a, inf_b = _number(row_a.get("fid_infinity")), _number(row_b.get("fid_infinity"))
    if inf_a is not None and inf_b is not None:
        return "FID∞", inf_a, inf_b
    fid_a, fid_b = _number(row_a.get("fid")), _number(row_b.get("fid"))
    counts = row_a.get("num_samples"), row_b.get("num_samples")
    same_count = None in counts or counts[0] == counts[1]
    if fid_a is not None and fid_b is not None and same_count:
        return "FID", fid_a, fid_b
    return None


def _sign(value):
    return (value > 0) - (value < 0)


def ordering_statements(rows, kid_label="KID"):
    """What the numbers say about the order of every pair of rows.

    For each pair (in the rows' order):

    * ``"disagreement"`` when FID∞ (or raw FID, at equal sample counts) and KID rank the
      two rows in opposite orders;
    * ``"resolved"`` when their FID bootstrap intervals are apart;
    * ``"within_noise"`` when the intervals overlap, or when either row has none.

    Args:
        rows: ``{name: row}`` (see the module docstring), e.g. the samplers of one run.
        kid_label: how the texts name KID (e.g. "KID ×10³"); the KID values are quoted as
            given.

    Returns:
        A list of dicts ``{"kind", "rows": (name_a, name_b), "text"}``: the disagreements
        first, then the resolved pairs, then those within noise. ``text`` is one plain
        sentence naming both rows and the numbers.
    """
    statements = []
    for (name_a, row_a), (name_b, row_b) in itertools.combinations(rows.items(), 2):

        def add(kind, text, pair=(name_a, name_b)):
            statements.append({"kind": kind, "rows": pair, "text": text})

        comparison = _fid_comparison(row_a, row_b)
        kid_a, kid_b = _number(row_a.get("kid")), _number(row_b.get("kid"))
        if comparison is not None and kid_a is not None and kid_b is not None:
            metric, value_a, value_b = comparison
            by_fid, by_kid = _sign(value_a - value_b), _sign(kid_a - kid_b)
            if by_fid and by_kid and by_fid != by_kid:
                fid_better, kid_better = (name_a, name_b) if by_fid < 0 else (name_b, name_a)
                add(
                    "disagreement",
                    f"{metric} and {kid_label} order {name_a} and {name_b} differently: {metric} ranks "
                    f"{fid_better} better ({_show(value_a)} against {_show(value_b)}), {kid_label} ranks "
                    f"{kid_better} better ({_show(kid_a)} against {_show(kid_b)}).",
                )
        counts = row_a.get("num_samples"), row_b.get("num_samples")
        caveat = (
            f" (at different sample counts, {counts[0]:,} and {counts[1]:,}: FID rises as the count falls)"
            if None not in counts and counts[0] != counts[1]
            else ""
        )
        order = fid_intervals_order(row_a, row_b)
        if order is None:
            add("within_noise", f"{name_a} and {name_b}: no FID interval for both, so their order is not resolved.")
        elif order == 0:
            add(
                "within_noise",
                f"{name_a} and {name_b}: FID intervals {_show_interval(_interval(row_a))} and "
                f"{_show_interval(_interval(row_b))} overlap — their order is within noise{caveat}.",
            )
        else:
            better, worse = (name_a, name_b) if order < 0 else (name_b, name_a)
            add(
                "resolved",
                f"{better} below {worse} by FID: intervals {_show_interval(_interval(rows[better]))} and "
                f"{_show_interval(_interval(rows[worse]))} are apart{caveat}.",
            )
    return sorted(statements, key=lambda statement: _KINDS.index(statement["kind"]))
