"""The survey's conclusions, checked against the rows an experiment measured.

Each survey experiment ends with claims (Cerizza et al., 2023, sections 5.4–5.5 and 6):
DDIM at 50 steps is close to DDPM at 1,000 at a fraction of the time; the linear schedule
beat the cosine one; DDPM at 50 steps is near noise and DDIM at 1,000 steps worse than at
50; NCSN's FID is the highest; the SDE model's samples are the best, at a far higher cost;
the retrieval finds no copies of training images. ``check`` says for each whether kdiff's
rows support it, contradict it or cannot resolve it, with the numbers.

Two FIDs are ordered only when they come from equal sample counts and their 95 %
bootstrap intervals are apart (``order``, ``kdiff.comparisons``): FID falls as the sample count grows, and rows
drawn from different counts are compared at the count they share (the ``fid_equal*``
entries of ``pipeline.experiments.run_results``). Overlapping intervals are "within
noise", never an ordering.

Rows are the dicts of ``pipeline.experiments.run_results``: ``run``, ``row``, ``sampler``,
``label``, ``fid_equal`` / ``fid_equal_low`` / ``fid_equal_high`` / ``equal_count``,
``seconds_per_sample``, ``memorization_ratio``, ``num_samples``, ``kid``. The interval
logic is ``kdiff.comparisons``'; this module imports no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import math

from kdiff import comparisons

SUPPORTS = "supports"
CONTRADICTS = "contradicts"
UNRESOLVED = "cannot resolve"
# DDIM-50 is "close" to DDPM-1000 when its FID is at most this much higher (the survey's
# own gaps were 3.5 % and 4.2 %, Tables 1 and 2) or the two cannot be ordered.
CLOSE_FRACTION = 0.10
# "A fraction of the time": the survey measured 20×; kdiff asks for at least 10×.
SPEEDUP_AT_LEAST = 10.0
# The memorization ratio is about 0.5 for images as new as held-out ones and 1 for copies:
# no memorization when its interval lies below NO_COPIES_BELOW, memorization when it lies
# above COPIES_ABOVE.
NO_COPIES_BELOW = 0.75
COPIES_ABOVE = 0.9


@dataclasses.dataclass(frozen=True)
class Verdict:
    """One claim of the survey and what kdiff's rows say of it.

    Attributes:
        claim: the survey's claim and where it makes it.
        verdict: ``SUPPORTS``, ``CONTRADICTS`` or ``UNRESOLVED``.
        evidence: the numbers behind the verdict.
    """

    claim: str
    verdict: str
    evidence: str


def comparable(row):
    """A result row as ``kdiff.comparisons`` reads it: its FID at the equal count, KID raw."""
    return {
        "fid": row.get("fid_equal"),
        "fid_low": row.get("fid_equal_low"),
        "fid_high": row.get("fid_equal_high"),
        "fid_infinity": None,  # the rows are compared at one count: raw FID, no extrapolation
        "kid": row.get("kid"),
        "num_samples": row.get("equal_count"),
    }


def order(a, b):
    """How two rows' FIDs at equal sample counts compare (``kdiff.comparisons.fid_intervals_order``).

    Args:
        a, b: result rows with ``fid_equal_low`` / ``fid_equal_high``.

    Returns:
        −1 when a's interval lies wholly below b's (a is better), 1 when wholly above,
        0 when they overlap (within noise), None when either has no interval.
    """
    return comparisons.fid_intervals_order(comparable(a), comparable(b))


def _name(row):
    return f"`{row['run']}/{row['sampler']}`"


def _fid(row):
    value = row.get("fid_equal")
    if value is None:
        return "no FID"
    low, high = row.get("fid_equal_low"), row.get("fid_equal_high")
    interval = "" if low is None or high is None else f" [{float(low):.3g}, {float(high):.3g}]"
    return f"FID {float(value):.3g}{interval} at {row['equal_count']:,} samples"


def orderings(rows, kid_label="KID"):
    """Which pairs of rows FID orders, which are within noise, and where FID and KID disagree.

    Args:
        rows: result rows (``fid_equal*`` entries at one sample count; ``kid``).
        kid_label: how the sentences name KID.

    Returns:
        Markdown list lines (``kdiff.comparisons.ordering_statements``): disagreements,
        then resolved pairs, then pairs within noise.
    """
    table = {_name(row): comparable(row) for row in rows if row.get("fid_equal") is not None}
    return [f"- {statement['text']}" for statement in comparisons.ordering_statements(table, kid_label)]


def _find(rows, run=None, row=None, sampler=None):
    for candidate in rows:
        if run not in (None, candidate["run"]) or row not in (None, candidate["row"]):
            continue
        if sampler not in (None, candidate["sampler"]):
            continue
        return candidate
    return None


def _missing(claim, *what):
    return Verdict(claim, UNRESOLVED, "not measured: " + ", ".join(what) + " (run the experiment(s) that draw them)")


def ddim_close_to_ddpm(rows, run):
    """The survey's 5.4.2 (and Table 1): DDIM-50 close to DDPM-1000 at a fraction of the time.

    Args:
        rows: result rows.
        run: the run whose ``ddim_50`` and ``ddpm_1000`` rows are compared.

    Returns:
        A ``Verdict``.
    """
    claim = (f"DDIM at 50 steps gives samples close to DDPM at 1,000 steps at a fraction of the time "
             f"(Table 2 and section 5.4.2: 81.0 against 77.7, 20× faster) — `{run}`")
    ddim, ddpm = _find(rows, run, "ddim_50"), _find(rows, run, "ddpm_1000")
    if ddim is None or ddpm is None or ddim.get("fid_equal") is None or ddpm.get("fid_equal") is None:
        return _missing(claim, f"{run}'s ddim_50 and ddpm_1000")
    sign = order(ddim, ddpm)
    gap = float(ddim["fid_equal"]) / float(ddpm["fid_equal"]) - 1.0
    speedup = None
    if ddim.get("seconds_per_sample") and ddpm.get("seconds_per_sample"):
        speedup = float(ddpm["seconds_per_sample"]) / float(ddim["seconds_per_sample"])
    evidence = f"DDIM-50 {_fid(ddim)}; DDPM-1000 {_fid(ddpm)}"
    evidence += "" if speedup is None else f"; DDIM-50 {speedup:.3g}× faster per sample"
    fast = speedup is not None and speedup >= SPEEDUP_AT_LEAST
    if sign == 1 and gap > CLOSE_FRACTION:
        return Verdict(claim, CONTRADICTS, evidence + f" (DDIM-50 worse by {gap:.0%}, intervals apart)")
    if speedup is not None and not fast:
        return Verdict(claim, CONTRADICTS, evidence + f" (less than {SPEEDUP_AT_LEAST:g}× faster)")
    if speedup is None:
        return Verdict(claim, UNRESOLVED, evidence + " (no sampling times)")
    if sign == 0:
        return Verdict(claim, SUPPORTS, evidence + " (the FIDs are within noise)")
    if sign == -1:
        return Verdict(claim, SUPPORTS, evidence + " (DDIM-50 better, intervals apart)")
    return Verdict(claim, SUPPORTS, evidence + f" (DDIM-50 worse by {gap:.0%}, within {CLOSE_FRACTION:.0%})")


def linear_beats_cosine(rows, sampler):
    """The survey's Table 1: the linear schedule gave a better FID than the cosine one.

    Args:
        rows: result rows (``ddpm_linear`` and ``ddpm_cosine`` runs).
        sampler: the row compared ("ddpm_1000" or "ddim_50").

    Returns:
        A ``Verdict``.
    """
    claim = (f"The linear schedule gives a better FID than the cosine schedule (Table 1, at 128×128: "
             f"99.8 against 115.7 for DDPM, 103.3 against 113.4 for DDIM; Nichol & Dhariwal found the opposite "
             f"at 32×32 and 64×64) — `{sampler}`")
    linear, cosine = _find(rows, "ddpm_linear", sampler), _find(rows, "ddpm_cosine", sampler)
    if linear is None or cosine is None:
        return _missing(claim, f"ddpm_linear/{sampler}", f"ddpm_cosine/{sampler}")
    sign = order(linear, cosine)
    evidence = f"linear {_fid(linear)}; cosine {_fid(cosine)}"
    if sign is None or sign == 0:
        return Verdict(claim, UNRESOLVED, evidence + " (the intervals overlap)")
    return Verdict(claim, SUPPORTS if sign < 0 else CONTRADICTS, evidence + " (intervals apart)")


def worse_than(rows, subject, others, claim):
    """A claim that ``subject`` has a worse FID than each of ``others`` (intervals apart).

    Args:
        rows: result rows.
        subject: ``(run, row)`` of the row said to be worse.
        others: ``(run, row)`` pairs, or None for every other row of ``rows``.
        claim: the claim's text.

    Returns:
        A ``Verdict``: supports when it is worse than each, contradicts when any is
        worse than it, cannot resolve otherwise.
    """
    worse = _find(rows, *subject)
    if worse is None or worse.get("fid_equal") is None:
        return _missing(claim, "/".join(subject))
    if others is None:
        compared = [r for r in rows if r is not worse and r.get("fid_equal") is not None]
    else:
        compared = [r for r in (_find(rows, *pair) for pair in others) if r is not None and r.get("fid_equal") is not None]
    if not compared:
        return _missing(claim, "the rows it is compared with")
    signs = [order(worse, other) for other in compared]
    evidence = f"{_name(worse)} {_fid(worse)}; " + "; ".join(f"{_name(r)} {_fid(r)}" for r in compared)
    if any(sign == -1 for sign in signs):
        return Verdict(claim, CONTRADICTS, evidence + " (a compared row is worse, intervals apart)")
    if all(sign == 1 for sign in signs):
        return Verdict(claim, SUPPORTS, evidence + " (worse than each, intervals apart)")
    return Verdict(claim, UNRESOLVED, evidence + " (some intervals overlap)")


def sde_best_and_costliest(rows, run="ncsnpp_ve", sampler="score_sde_ve_pc"):
    """The survey's 5.4.4 and 6: the SDE model's samples are the best, at a far higher cost.

    Args:
        rows: every result row of the scale (the other families' too).
        run, sampler: the predictor–corrector row.

    Returns:
        Two ``Verdict`` s: quality (better than every other family's rows) and cost (the
        highest time per sample).
    """
    quality_claim = "SBGM-SDE produces the best samples of the families (sections 5.4.4 and 6: FID 63.5)"
    cost_claim = "SBGM-SDE's sampling costs far more than the others' (section 5.4.4: 12 minutes an image on a GPU)"
    pc = _find(rows, run, sampler=sampler)
    if pc is None:
        return [_missing(quality_claim, f"{run}/{sampler}"), _missing(cost_claim, f"{run}/{sampler}")]
    others = [r for r in rows if r["run"] != run]
    verdicts = []
    measured = [r for r in others if r.get("fid_equal") is not None]
    if pc.get("fid_equal") is None or not measured:
        verdicts.append(_missing(quality_claim, "the other families' rows"))
    else:
        signs = [order(pc, r) for r in measured]
        best_other = min(measured, key=lambda r: float(r["fid_equal"]))
        evidence = f"{_name(pc)} {_fid(pc)}; the best other row {_name(best_other)} {_fid(best_other)}"
        if all(sign == -1 for sign in signs):
            verdicts.append(Verdict(quality_claim, SUPPORTS, evidence + " (better than every other row, intervals apart)"))
        elif any(sign == 1 for sign in signs):
            verdicts.append(Verdict(quality_claim, CONTRADICTS, evidence + " (another row is better, intervals apart)"))
        else:
            verdicts.append(Verdict(quality_claim, UNRESOLVED, evidence + " (some intervals overlap)"))
    timed = [r for r in others if r.get("seconds_per_sample")]
    if not pc.get("seconds_per_sample") or not timed:
        verdicts.append(_missing(cost_claim, "sampling times"))
    else:
        slowest = max(timed, key=lambda r: float(r["seconds_per_sample"]))
        ratio = float(pc["seconds_per_sample"]) / float(slowest["seconds_per_sample"])
        evidence = (f"{_name(pc)} {float(pc['seconds_per_sample']):.3g} s a sample; the slowest other row "
                    f"{_name(slowest)} {float(slowest['seconds_per_sample']):.3g} s ({ratio:.3g}×)")
        verdicts.append(Verdict(cost_claim, SUPPORTS if ratio > 1 else CONTRADICTS, evidence))
    return verdicts


def wilson_interval(successes, total, z=1.96):
    """The Wilson score interval of a proportion (95 % at z = 1.96).

    Args:
        successes: the count, 0 ≤ successes ≤ total.
        total: the trials, ≥ 1.

    Returns:
        ``(low, high)``.
    """
    if total < 1 or not 0 <= successes <= total:
        raise ValueError(f"Expected 0 <= successes <= total and total >= 1. Received: successes={successes}, total={total}")
    p = successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


def no_memorization(row):
    """The survey's 5.5: the samples are not copies of training images.

    Args:
        row: a result row with ``memorization_ratio`` and ``num_samples``.

    Returns:
        A ``Verdict``.
    """
    claim = f"The samples are not copies of training images (section 5.5, judged by eye) — {_name(row)}"
    ratio, count = row.get("memorization_ratio"), row.get("num_samples") or 0
    if ratio is None or count < 1:
        return _missing(claim, "its retrieval")
    low, high = wilson_interval(round(float(ratio) * count), count)
    evidence = (f"memorization ratio {float(ratio):.3g} [{low:.3g}, {high:.3g}] over {count:,} samples "
                "(about 0.5 for new images, 1 for copies)")
    if high < NO_COPIES_BELOW:
        return Verdict(claim, SUPPORTS, evidence + f" (below {NO_COPIES_BELOW})")
    if low > COPIES_ABOVE:
        return Verdict(claim, CONTRADICTS, evidence + f" (above {COPIES_ABOVE})")
    return Verdict(claim, UNRESOLVED, evidence)


def best_rows(rows):
    """Each run's row with the lowest FID at the equal count: a model at its best sampler.

    Args:
        rows: result rows.

    Returns:
        One row per run that has an FID, in the order the runs first appear.
    """
    best = {}
    for row in rows:
        if row.get("fid_equal") is None:
            continue
        if row["run"] not in best or float(row["fid_equal"]) < float(best[row["run"]]["fid_equal"]):
            best[row["run"]] = row
    return list(best.values())


def check(experiment, rows, every_row=()):
    """The survey's claims that an experiment bears on, each with kdiff's verdict.

    Args:
        experiment: the experiment's name ("table1", "table2", "ncsn", "sde", "retrieval").
        rows: its result rows.
        every_row: the result rows of every run measured at the same scale (for the
            claims across families: NCSN's FID, the SDE's quality); defaults to ``rows``.

    Returns:
        A list of ``Verdict`` s.
    """
    every_row = list(every_row) or list(rows)
    if experiment == "table1":
        return [linear_beats_cosine(rows, "ddpm_1000"), linear_beats_cosine(rows, "ddim_50"),
                ddim_close_to_ddpm(rows, "ddpm_linear"), ddim_close_to_ddpm(rows, "ddpm_cosine")]
    if experiment == "table2":
        run = rows[0]["run"] if rows else "ddpm_linear"
        others = [(run, key) for key in ("ddpm_1000", "ddim_50", "ddim_1000")]
        return [
            ddim_close_to_ddpm(rows, run),
            worse_than(rows, (run, "ddpm_50"), others,
                       "DDPM at 50 steps gives images close to Gaussian noise, far worse than the other rows "
                       "(Table 2: FID 459.2)"),
            worse_than(rows, (run, "ddim_1000"), [(run, "ddim_50")],
                       "DDIM at 1,000 steps scores worse than DDIM at 50 steps (Table 2: 94.8 against 81.0)"),
        ]
    if experiment == "ncsn":
        claim = "NCSN's FID is the highest of the experiments: behind each other model's best row (section 5.4.3: 110.2)"
        if not rows:
            return [_missing(claim, "the NCSN row")]
        subject = rows[0]
        others = best_rows(r for r in every_row if r["run"] != subject["run"])
        if not others:
            return [_missing(claim, "the other families' rows")]
        return [worse_than([subject] + others, (subject["run"], subject["row"]), None, claim)]
    if experiment == "sde":
        run = rows[0]["run"] if rows else "ncsnpp_ve"
        pool = list(rows) + [r for r in every_row if r["run"] != run]
        return sde_best_and_costliest(pool, run=run)
    if experiment == "retrieval":
        return [no_memorization(row) for row in rows]
    return []


def render(verdicts):
    """Markdown lines for a report: one bullet per claim, verdict first."""
    return [f"- **{v.verdict}**: {v.claim}. {v.evidence}." for v in verdicts]
