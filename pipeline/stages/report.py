"""Report stage: report.md, report.html and metrics.json, readable without any other notes.

The report says what was trained and how it was scored, with the papers behind each
method, and compares the samplers of the run the way the survey of Cerizza, Savazzi and
Barbera ("Diffusion Models", Università di Milano-Bicocca, 2023; Table 2) compares DDPM
and DDIM sampling — FID, sampling time — at a small scale, with KID, classifier
statistics and a memorization ratio added. ``report.md`` is Markdown; ``report.html`` is
the same text rendered by the ``markdown`` library (with its tables extension);
``metrics.json`` holds every number of the tables (see :func:`build_summary`).
"""

from __future__ import annotations

import math
import os
import re
import types

from pipeline.stages.base import EXAMPLES, METRICS, MODEL, REPORT, RETRIEVAL, SAMPLES, StageSpec
from pipeline import config as config_lib
from pipeline import io
from pipeline.stages import evaluate
from pipeline.stages.evaluate import kid_entries
from pipeline.stages.sample import GRID_MAX, TRAJECTORY_FRAMES

SPEC = StageSpec(
    name="report",
    inputs={"examples": EXAMPLES, "model": MODEL, "samples": SAMPLES, "metrics": METRICS, "retrieval": RETRIEVAL},
    outputs={"report": REPORT},
)

# The works the report cites, in the order of its References section: (short citation, entry).
REFERENCES = (
    (
        "Cerizza et al., 2023",
        'Raffaele Cerizza, Giacomo Savazzi, Thomas Barbera. "Diffusion Models". Università di '
        "Milano-Bicocca, 2023 (in Italian). The survey whose four families, sampler comparison "
        "(Table 2), FID protocol (section 5.3) and similarity retrieval (section 5.5) this pipeline follows.",
    ),
    (
        "Ho et al., 2020",
        'Jonathan Ho, Ajay Jain, Pieter Abbeel. "Denoising Diffusion Probabilistic Models". '
        "NeurIPS 2020. arXiv:2006.11239.",
    ),
    (
        "Nichol & Dhariwal, 2021",
        'Alex Nichol, Prafulla Dhariwal. "Improved Denoising Diffusion Probabilistic Models". '
        "ICML 2021. arXiv:2102.09672.",
    ),
    (
        "Song, Meng & Ermon, 2021",
        'Jiaming Song, Chenlin Meng, Stefano Ermon. "Denoising Diffusion Implicit Models". '
        "ICLR 2021. arXiv:2010.02502.",
    ),
    (
        "Song & Ermon, 2019",
        'Yang Song, Stefano Ermon. "Generative Modeling by Estimating Gradients of the Data '
        'Distribution". NeurIPS 2019. arXiv:1907.05600.',
    ),
    (
        "Song et al., 2021",
        "Yang Song, Jascha Sohl-Dickstein, Diederik P. Kingma, Abhishek Kumar, Stefano Ermon, Ben "
        'Poole. "Score-Based Generative Modeling through Stochastic Differential Equations". '
        "ICLR 2021. arXiv:2011.13456.",
    ),
    (
        "Lu et al., 2022",
        'Cheng Lu, Yuhao Zhou, Fan Bao, Jianfei Chen, Chongxuan Li, Jun Zhu. "DPM-Solver++: Fast Solver '
        'for Guided Sampling of Diffusion Probabilistic Models". arXiv:2211.01095, 2022.',
    ),
    (
        "Karras et al., 2022",
        'Tero Karras, Miika Aittala, Timo Aila, Samuli Laine. "Elucidating the Design Space of '
        'Diffusion-Based Generative Models". NeurIPS 2022. arXiv:2206.00364.',
    ),
    (
        "Ho & Salimans, 2022",
        'Jonathan Ho, Tim Salimans. "Classifier-Free Diffusion Guidance". NeurIPS 2021 Workshop on '
        "Deep Generative Models and Downstream Applications; arXiv:2207.12598, 2022.",
    ),
    (
        "Heusel et al., 2017",
        "Martin Heusel, Hubert Ramsauer, Thomas Unterthiner, Bernhard Nessler, Sepp Hochreiter. "
        '"GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium". '
        "NeurIPS 2017. arXiv:1706.08500. (FID.)",
    ),
    (
        "Chong & Forsyth, 2020",
        'Min Jin Chong, David Forsyth. "Effectively Unbiased FID and Inception Score and where to find '
        'them". CVPR 2020. arXiv:1911.07023. (FID∞.)',
    ),
    (
        "Bińkowski et al., 2018",
        'Mikołaj Bińkowski, Danica J. Sutherland, Michael Arbel, Arthur Gretton. "Demystifying MMD '
        'GANs". ICLR 2018. arXiv:1801.01401. (KID.)',
    ),
)

# What each family is, for a reader who has not seen the code.
FAMILIES = types.MappingProxyType({
    "ddpm": (
        "a denoising diffusion probabilistic model (DDPM; Ho et al., 2020; the cosine schedule and the "
        "learned variance, where configured, are those of Nichol & Dhariwal, 2021): a network trained to "
        "predict the noise "
        "added to an image, sampled by reversing the noising chain step by step (the ddpm sampler) or "
        "with the deterministic, fewer-step DDIM sampler (Song, Meng & Ermon, 2021)"
    ),
    "ncsn": (
        "a noise-conditional score network (NCSN; Song & Ermon, 2019): a network trained by denoising "
        "score matching at a ladder of noise levels σ, sampled with annealed Langevin dynamics"
    ),
    "sde": (
        "a score-based model through stochastic differential equations (Song et al., 2021): a network "
        "trained to estimate the score of the noised data at every time of a continuous SDE, sampled by "
        "integrating the reverse-time SDE (predictor–corrector, Euler–Maruyama) or the probability-flow ODE"
    ),
})

_STYLE = (
    "body{font-family:sans-serif;max-width:64em;margin:2em auto;padding:0 1em;line-height:1.4}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
    "img{image-rendering:pixelated;max-width:100%}code{background:#f4f4f4;padding:0 2px}"
)



DASH = "–"


def table(header, rows):
    """A Markdown table without its all-dash columns.

    Args:
        header: the column titles.
        rows: lists of cells (Markdown text), one per column; "–" is an empty cell.

    Returns:
        The table's lines. A column whose every row is "–" is left out (the first column,
        the rows' names, always stays).
    """
    keep = [i for i in range(len(header)) if i == 0 or any(row[i] != DASH for row in rows)]
    lines = ["| " + " | ".join(header[i] for i in keep) + " |", "|" + "---|" * len(keep)]
    return lines + ["| " + " | ".join(row[i] for i in keep) + " |" for row in rows]


def _guidance_table(summary):
    """The class-conditional rows: how often the classifier sees the class each sample was
    drawn for, by guidance scale (lines of Markdown; none for an unconditional model)."""
    rows = [(name, row) for name, row in summary["samplers"].items() if row.get("class_agreement") is not None]
    if not rows:
        return []
    lines = [
        "### Class-conditional sampling",
        "",
        "Each sample was drawn for a class (the classes in turn). **Class agreement** is the share of "
        "samples the classifier assigns to that class; classifier-free guidance (Ho & Salimans, 2022) "
        "mixes the conditional and unconditional predictions, ε_u + s·(ε_c − ε_u), and a scale s above 1 "
        "should raise agreement at some cost in FID (less varied samples). Scale 1 is the conditional "
        "model alone.",
        "",
    ]
    lines += table(
        ["sampler", "guidance scale", "class agreement ↑", "FID ↓"],
        [
            [
                _code(name),
                format_value(1.0 if row.get("guidance_scale") is None else row.get("guidance_scale")),
                format_value(row.get("class_agreement")),
                format_value(row.get("fid")),
            ]
            for name, row in rows
        ],
    )
    return lines + [""]

def nfe_curves(summary):
    """FID against network evaluations per sampler: the rows whose cost the registry knows
    (``nfe`` in the timing), without guidance.

    Args:
        summary: ``build_summary``'s dict.

    Returns:
        ``{sampler: [(nfe, fid, fid_low, fid_high, row name), ...]}`` sorted by NFE, for the
        samplers with at least two points.
    """
    curves = {}
    for name, row in summary["samplers"].items():
        if row.get("nfe") is None or row.get("fid") is None or row.get("guidance_scale") is not None:
            continue
        curves.setdefault(row.get("sampler") or name, []).append(
            (int(row["nfe"]), float(row["fid"]), row.get("fid_low"), row.get("fid_high"), name)
        )
    return {sampler: sorted(points) for sampler, points in curves.items() if len(points) >= 2}


def _save_figure(figure, path):
    """Writes a Matplotlib figure as a 100-dpi PNG (laid out tight) and closes it."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    with io.open_write(path) as f:
        figure.savefig(f, format="png", dpi=100)
    plt.close(figure)


def _nfe_plot(curves, path):
    """Writes FID against network evaluations (log scale), one line per sampler with its
    bootstrap intervals, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5.5, 3.5))
    for sampler, points in curves.items():
        nfe, fid = [p[0] for p in points], [p[1] for p in points]
        low = [f - (p[2] if p[2] is not None else f) for f, p in zip(fid, points)]
        high = [(p[3] if p[3] is not None else f) - f for f, p in zip(fid, points)]
        axis.errorbar(nfe, fid, yerr=[low, high], marker="o", markersize=4, capsize=3, label=sampler)
    axis.set_xscale("log")
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    values = [p[0] for points in curves.values() for p in points]
    axis.set_xticks([t for t in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000) if min(values) <= t <= max(values)])
    axis.xaxis.set_major_formatter(ScalarFormatter())
    axis.xaxis.set_minor_formatter(NullFormatter())
    axis.set_xlabel("network evaluations per sample (NFE)")
    axis.set_ylabel("FID")
    axis.legend()
    axis.grid(True, which="both", alpha=0.3)
    _save_figure(figure, path)


def _nfe_section(summary, picture):
    """The quality-against-cost section: the table of the sweep and its plot (Markdown lines;
    none without a sweep)."""
    curves = nfe_curves(summary)
    if not curves:
        return []
    lines = [
        "### Quality against cost",
        "",
        "FID against the number of network evaluations per sample (NFE: DDIM, DPM-Solver++ and Euler "
        "spend one a step, Heun two but the last), with the 95 % bootstrap intervals: the survey's "
        "conclusion is that sampling cost is the families' weak point, and these few-step solvers "
        "(Lu et al., 2022; Karras et al., 2022) are the answer the field has since given.",
        "",
        f"![FID against NFE]({picture})",
        "",
        f"*FID of each sweep row against its network evaluations per sample, one line per sampler "
        f"({', '.join(_code(sampler) for sampler in curves)}), bars the 95 % bootstrap intervals.*",
        "",
    ]
    lines += table(
        ["sampler", "NFE", "FID ↓", "FID 95 % interval", "row"],
        [
            [_code(sampler), str(nfe), format_value(fid), _interval({"fid_low": low, "fid_high": high}), _code(name)]
            for sampler, points in curves.items()
            for nfe, fid, low, high, name in points
        ],
    )
    return lines + [""]


def format_value(value, digits=3):
    """A number as the tables show it: ``digits`` significant digits, "–" for None / NaN."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return DASH
    if isinstance(value, float):
        # Large values in full (12,090), not in exponent notation (1.21e+04).
        return f"{value:.{digits}g}" if abs(value) < 10 ** digits - 0.5 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return _text(str(value))


def _text(value):
    """``value`` as literal Markdown text: its Markdown and HTML specials escaped."""
    value = str(value).replace("\\", "\\\\").replace("<", "&lt;")
    for char in "`*[]|#":
        value = value.replace(char, "\\" + char)
    # An underscore inside a word (ddim_10, pool_3) is never emphasis; only escape the others.
    return re.sub(r"(?<!\w)_|_(?!\w)", r"\\_", value)


def _code(value):
    """``value`` as a Markdown code span (rendered as ``<code>``, never interpreted)."""
    value = str(value)
    return f"`` {value} ``" if "`" in value else f"`{value}`"


def _interval(row):
    """FID's bootstrap interval of a metrics row, "[low, high]" (– without one)."""
    low, high = row.get("fid_low"), row.get("fid_high")
    return DASH if low is None or high is None else f"[{format_value(low)}, {format_value(high)}]"


def _loss_curve(history, path):
    """Writes the per-epoch training (and validation) loss as a PNG with a marker per epoch.

    Args:
        history: the train stage's ``history.json`` ("loss", optional "val_loss": one value
            per epoch, None where not recorded).
        path: the PNG to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, axis = plt.subplots(figsize=(5, 3))
    drawn = False
    for key, label in (("loss", "train loss"), ("val_loss", "validation loss")):
        points = [
            (epoch, float(value))
            for epoch, value in enumerate(history.get(key) or [], start=1)
            if value is not None and math.isfinite(float(value))
        ]
        if not points:
            continue
        epochs, values = zip(*points)
        # A marker per epoch: a one-epoch run is one visible point, not an empty plot.
        axis.plot(epochs, values, marker="o" if len(points) <= 60 else None, markersize=4, label=label)
        if len(points) == 1:
            axis.annotate(f"{values[0]:.4g}", (epochs[0], values[0]), textcoords="offset points", xytext=(6, 6))
        drawn = True
    if drawn:
        axis.legend()
    else:
        axis.text(0.5, 0.5, "no loss recorded", ha="center", va="center", transform=axis.transAxes)
    if len(history.get("loss") or []) <= 1:
        axis.set_xlim(0.5, 1.5)
        axis.set_xticks([1])
    else:
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlabel("epoch")
    axis.set_ylabel("loss")
    _save_figure(figure, path)


def _fid_infinity_supported(row, min_samples):
    """A row's ``fid_infinity_supported``, from its count where an older metrics.json lacks it."""
    if "fid_infinity_supported" in row:
        return bool(row["fid_infinity_supported"])
    count = row.get("num_samples", row.get("num_images"))
    return min_samples is not None and count is not None and count >= min_samples


def build_summary(stats, history, timings, metrics, retrieval, params):
    """The numbers of the run, as ``metrics.json`` stores them.

    Args:
        stats: the ingest stage's ``stats.json``.
        history: the train stage's ``history.json``.
        timings: the sample stage's ``timings.json`` (sampler name → timing).
        metrics: the evaluate stage's ``metrics.json``.
        retrieval: the retrieve stage's ``retrieval.json``.
        params: the report's parameters (``SPEC.parameters``).

    Returns:
        A dict with "run", "training", "samplers" (per sampler: the timing — "seconds"
        with tracing, "trace_seconds", "sampling_seconds" without it, "images_per_second",
        "sampling_images_per_second" —, FID with its interval and FID∞ (and
        "fid_infinity_supported"), KID raw ("kid_mean", "kid_std" — None when the subsets
        cannot vary —, "kid_standard_error") and ×10³ ("kid_x1000_*"), classifier
        statistics, memorization, and "flags": ``[{"code", "detail"}]`` from
        ``evaluate.row_flags``), "real_heldout", "baseline_gaussian", "feature_space",
        "feature_dim", "fid_infinity_min_samples", "kid_scale" (the unit shown: 1 raw,
        1000 ×10³) and "kid_label", "orderings" (``kdiff.comparisons.ordering_statements``
        of the samplers) and "warnings".
    """
    from kdiff import comparisons
    from kdiff import metrics as kmetrics

    dim = metrics.get("feature_dim")
    min_samples = metrics.get("fid_infinity_min_samples") or (kmetrics.fid_infinity_min_samples(dim) if dim else None)
    scale = metrics.get("kid_scale") or evaluate.kid_display_scale(
        metrics.get("fid_features") or config_lib.field_default("fid_features")
    )

    def with_kid(row):
        row = dict(row)
        if "kid_mean" in row:
            row.update(kid_entries(row.get("kid_mean"), row.get("kid_std"), row.get("kid_standard_error")))
        row["fid_infinity_supported"] = _fid_infinity_supported(row, min_samples)
        return row

    baseline = with_kid(metrics.get("baseline_gaussian", {}))
    samplers = {}
    for name, timing in timings.items():
        row = dict(timing)
        row.update(metrics.get("samplers", {}).get(name, {}))
        row.update({f"retrieval_{k}": v for k, v in retrieval.get(name, {}).items() if not isinstance(v, (dict, list))})
        row = with_kid(row)
        row["flags"] = [{"code": code, "detail": detail} for code, detail in evaluate.row_flags(row, baseline)]
        samplers[name] = row
    scored = {
        name: dict(evaluate.comparable(row), kid=None if row.get("kid_mean") is None else row["kid_mean"] * scale)
        for name, row in samplers.items()
        if row.get("fid") is not None
    }
    return {
        "run": {**params, "epochs": history.get("epochs", params.get("epochs")), "num_train": stats.get("num_train"), "num_eval": stats.get("num_eval")},
        "training": {
            "seconds": history.get("seconds"),
            "steps": history.get("steps"),
            "steps_per_second": history.get("steps_per_second"),
            "final_loss": (history.get("loss") or [None])[-1],
            "final_val_loss": (history.get("val_loss") or [None])[-1],
            "epochs": len(history.get("loss") or []),
            "precision": history.get("precision"),
            "export_precision": history.get("export_precision"),
        },
        "samplers": samplers,
        "real_heldout": with_kid(metrics.get("real_heldout", {})),
        "baseline_gaussian": baseline,
        "classifier_accuracy_heldout": metrics.get("classifier_accuracy_heldout"),
        "feature_space": metrics.get("feature_space"),
        "feature_dim": dim,
        "fid_infinity_min_samples": min_samples,
        "kid_scale": scale,
        "kid_label": evaluate.kid_label(scale),
        "orderings": comparisons.ordering_statements(scored, kid_label=evaluate.kid_label(scale)),
        "num_real": metrics.get("num_real"),
        "warnings": metrics.get("warnings", []),
    }


def references():
    """The "References" section of a report (this one's and the experiments'), as Markdown lines."""
    lines = ["## References", ""]
    lines += [f"- {_text(short)}: {_text(entry)}" for short, entry in REFERENCES]
    return lines + [""]


NFE_PICTURE = "pictures/fid_vs_nfe.png"


def sampler_phrase(name, row):
    """A sampler row named for prose: "`ddim_10` (ddim sampler, 10 steps)".

    Args:
        name: the row's name.
        row: its timing / summary row ("sampler", "steps", "guidance_scale", "nfe").

    Returns:
        Markdown text.
    """
    parts = []
    if row.get("sampler"):
        parts.append(f"{_text(row['sampler'])} sampler")
    if row.get("steps") is not None:
        parts.append(f"{format_value(row['steps'])} step{'' if row['steps'] == 1 else 's'}")
    if row.get("guidance_scale") is not None:
        parts.append(f"guidance scale {format_value(row['guidance_scale'])}")
    return _code(name) + (f" ({', '.join(parts)})" if parts else "")


def _kid_cell(row, scale):
    """KID in the shown unit with its jackknife standard error: "6.61 ± 2.3", "6.61 ± n/a"."""
    if row.get("kid_mean") is None:
        return DASH
    error = row.get("kid_standard_error")
    return f"{format_value(row['kid_mean'] * scale)} ± {'n/a' if error is None else format_value(error * scale, 2)}"


def _fid_infinity_cell(row):
    return format_value(row.get("fid_infinity")) if row.get("fid_infinity_supported") else DASH


def _main_table(summary):
    """The samplers' table with the held-out and baseline rows (lines of Markdown)."""
    scale = summary["kid_scale"]
    header = [
        "sampler", "flags", "steps", "samples", "FID ↓", "FID 95 % interval", "FID∞ ↓",
        f"{summary['kid_label']} ↓ (± s.e.)", "time with tracing (s)", "graph tracing (s)",
        "sampling time without tracing (s)", "images/s (without tracing)", "classifier confidence",
        "class entropy (1 = even)", "classes present", "memorization",
    ]

    def cells(name, row, flags, steps, count, timing, memorization):
        return [
            name, flags, steps, format_value(count), format_value(row.get("fid")), _interval(row), _fid_infinity_cell(row),
            _kid_cell(row, scale), *timing, format_value(row.get("classifier_confidence")), format_value(row.get("class_entropy")),
            format_value(row.get("num_classes_present")), memorization,
        ]

    rows = []
    for name, row in summary["samplers"].items():
        flags = " ".join(f"⚠ {flag['code']}" for flag in row.get("flags", [])) or DASH
        timing = [
            format_value(row.get(key))
            for key in ("seconds", "trace_seconds", "sampling_seconds", "sampling_images_per_second")
        ]
        rows.append(
            cells(_code(name), row, flags, format_value(row.get("steps")), row.get("num_samples"), timing,
                  format_value(row.get("retrieval_memorization_ratio")))
        )
    real, base = summary["real_heldout"], summary["baseline_gaussian"]
    rows.append(cells("held-out real images (reference)", real, DASH, DASH, real.get("num_images"), [DASH] * 4, DASH))
    rows.append(cells("Gaussian fit to the pixels (baseline)", base, DASH, DASH, base.get("num_samples"), [DASH] * 4, DASH))
    return table(header, rows)


def _flag_notes(summary):
    """The warning lines under the table: what each flag means and which rows carry it."""
    lines = []
    for code, meaning in evaluate.FLAGS:
        flagged = [
            f"{_code(name)} ({_text(flag['detail'])})"
            for name, row in summary["samplers"].items()
            for flag in row.get("flags", [])
            if flag["code"] == code
        ]
        if flagged:
            lines.append(f"- **⚠ {code}**: {_text(meaning)}. Flagged: {'; '.join(flagged)}.")
    return ["**Flagged rows**", ""] + lines + [""] if lines else []


def _fid_infinity_note(summary):
    """The footnote on FID∞ withheld for too few samples (lines; none when all are shown)."""
    named = [(_code(name), row) for name, row in summary["samplers"].items()]
    named += [("the held-out real images", summary["real_heldout"]), ("the baseline", summary["baseline_gaussian"])]
    withheld = [
        f"{label} ({format_value(row.get('num_samples', row.get('num_images')))})"
        for label, row in named
        if row.get("fid_infinity") is not None and not row.get("fid_infinity_supported")
    ]
    if not withheld:
        return []
    dim = summary.get("feature_dim")
    return [
        f"FID∞ is shown only from {format_value(summary.get('fid_infinity_min_samples'))} samples, 10 per feature "
        f"dimension ({format_value(dim)} here): its fit's smallest subset, a fifth of the samples, then holds 2 rows per "
        "dimension, about the ratio of Chong & Forsyth's smallest (5,000 Inception features of 2,048 "
        "dimensions). Below that the small subsets' covariances are near-singular and the extrapolation "
        f"overshoots, often below zero. Withheld (a dash) for: {', '.join(withheld)}; `metrics.json` keeps "
        "the values with `fid_infinity_supported: false`.",
        "",
    ]


def _orderings_section(summary):
    """Which pairs of samplers the numbers order (lines; none with fewer than two samplers)."""
    statements = summary.get("orderings") or []
    if not statements:
        return []
    prefix = {"disagreement": "**Metrics disagree:** ", "resolved": "**Resolved:** ", "within_noise": "Within noise: "}
    lines = [
        "### Which orderings are resolved",
        "",
        "For each pair of samplers: whether their FID bootstrap intervals are apart (the order is resolved) "
        "or overlap (within noise), and where FID∞ — or FID, at equal sample counts — and KID rank the two "
        "differently.",
        "",
    ]
    return lines + [f"- {prefix[s['kind']]}{_text(s['text'])}" for s in statements] + [""]


PRECISION_PHRASES = {
    "float32": "float32",
    "mixed_float16": "mixed_float16 (float16 arithmetic with loss scaling; float32 weights, optimizer state and EMA)",
    "mixed_bfloat16": "mixed_bfloat16 (bfloat16 arithmetic; float32 weights, optimizer state and EMA)",
}


def _precision_lines(summary):
    """What the network trained and sampled in, as Markdown lines (none for a run that
    recorded neither, e.g. one written by an older version)."""
    training = summary["training"]
    trained, exported = training.get("precision"), training.get("export_precision")
    if trained is None and exported is None:
        return []
    sampled = {}
    for name, row in summary["samplers"].items():
        sampled.setdefault(row.get("precision") or exported, []).append(name)
    if len(sampled) == 1:
        drawn = f"every sampler's network computed in {next(iter(sampled))}"
    else:
        drawn = "; ".join(
            f"{', '.join(_code(n) for n in names)} in {precision}" for precision, names in sampled.items()
        )
        drawn = f"the samplers' networks computed in: {drawn}"
    trained_text = "imported, not trained" if trained is None else PRECISION_PHRASES.get(trained, trained)
    return [f"Precision: trained in {trained_text}; the export computes in {exported}; {drawn}.", ""]


def render_markdown(summary, pictures):
    """The report as Markdown.

    Args:
        summary: :func:`build_summary`'s dict.
        pictures: ``(title, relative path, caption)`` of each picture, in order (the
            caption is Markdown, shown in italics under the picture).

    Returns:
        The Markdown text.
    """
    run, training = summary["run"], summary["training"]
    family = run.get("family")
    about = FAMILIES.get(family, f"a {family} model")
    ran = [sampler_phrase(name, row) for name, row in summary["samplers"].items()]
    listed = ran[0] if len(ran) == 1 else ", ".join(ran[:-1]) + " and " + ran[-1] if ran else "no sampler"
    real = summary["real_heldout"]
    lines = [
        f"# kdiff run: {_text(family)} on {_code(run.get('dataset'))}",
        "",
        "This report was written by kdiff's pipeline (`python -m pipeline.run`). The run trained one "
        f"diffusion model, drew samples from it with {listed}, and scored them against the real images, the "
        "way the survey of Cerizza, Savazzi and Barbera (2023, Table 2) compares DDPM and DDIM sampling, at a "
        "small scale.",
        "",
        f"The model is {about}.",
        "",
        f"Data: {format_value(run.get('num_train'))} training and {format_value(run.get('num_eval'))} held-out images at "
        f"{run.get('image_size')}×{run.get('image_size')}. Network {_code(run.get('network'))}; "
        f"epochs: {run.get('epochs')}, batch size {run.get('batch_size')}, random seed {run.get('seed')}.",
        "",
        "## Samplers",
        "",
        f"Feature space: {_text(summary.get('feature_space'))}. Real reference images: "
        f"{format_value(summary.get('num_real'))}.",
        "",
    ]
    lines += _main_table(summary) + [""]
    lines += _flag_notes(summary)
    lines += _fid_infinity_note(summary)
    counts = {name: row.get("num_samples") for name, row in summary["samplers"].items()}
    if len(set(counts.values())) > 1:
        drawn = ", ".join(f"{_code(name)} {format_value(count)}" for name, count in counts.items())
        lines += [
            f"The samplers drew different numbers of images ({drawn}; a sampler config's `num_samples`): "
            "FID rises as the count falls, so compare their FID∞ and KID rather than their FID.",
            "",
        ]
    lines += _orderings_section(summary)
    kid_unit = (
        "raw: on the classifier's unnormalized features raw KIDs are of order 1–30, so ×10³ would read in thousands"
        if summary["kid_scale"] == 1
        else "×10³, as is conventional in Inception features"
    )
    lines += [
        "How to read the table:",
        "",
        "- **FID** (Fréchet Inception Distance; Heusel et al., 2017) is the Fréchet distance between "
        "Gaussians fitted to the features of the real training images and of the samples; lower is better. "
        "The held-out row's FID uses only the held-out split (a small set inflates FID), so compare "
        "samplers with each other and with the baseline. FID is biased upwards at small sample counts "
        "(and noisy): the **interval** is a 95 % bootstrap interval over the samples, and **FID∞** "
        "(Chong & Forsyth, 2020) extrapolates FID, fitted at several subset sizes, to infinitely many "
        "samples — the value to compare between runs with different sample counts, shown only where the "
        "sample count supports the fit.",
        f"- **KID** (Kernel Inception Distance; Bińkowski et al., 2018) is an unbiased estimate of the "
        "squared maximum mean discrepancy with a cubic polynomial kernel on the same features, averaged over "
        "100 random subsets of up to 1,000 images as in the KID paper, torch-fidelity and clean-fid; lower is "
        f"better, and it is better suited than FID to small sample counts. It is shown {kid_unit} "
        "(`metrics.json` has both raw and ×10³). After ± comes its **standard error**: a jackknife over the "
        "images of both sides (conservative), which covers the samples' own noise; the spread over subsets "
        "that other tools print does not, and it is undefined when every subset is the whole sample set "
        "(`kid_std` is then null in `metrics.json`). Its kernel is not scale-invariant: compare KIDs within "
        "one feature space only.",
        "- **Time**: the wall time of sampling all images, with and without the one-off graph tracing "
        "of the sampling loop. The first batch of each sampler on a worker is the warm-up (it traces the "
        "graph); the tracing time is what that batch took beyond the steady per-image rate of the later "
        "batches, and images/s is that steady rate. A column is left out when no row has a value (one "
        "batch per worker leaves no later batch to measure).",
        f"- **Classifier confidence** (the mean top probability of the samples) comes from a small classifier "
        f"trained on the labels (held-out accuracy {format_value(summary.get('classifier_accuracy_heldout'))}). A "
        "classifier can be confidently wrong on noise, so read it beside the **class entropy**: the entropy "
        "of the predicted classes' shares over log(number of classes) — 1 when every class is predicted "
        "equally often, 0 when all samples get one class — and **classes present**, how many classes are "
        f"predicted at least once. The held-out real images are the reference (confidence "
        f"{format_value(real.get('classifier_confidence'))}, class entropy {format_value(real.get('class_entropy'))}); "
        "`metrics.json` also has each row's mean per-sample predictive entropy.",
        "- **Memorization** is the share of samples whose nearest training image (same features) is "
        "closer than the typical train–train nearest-neighbour distance (the median); about 0.5 for "
        "fresh images, 1.0 for copies. The nearest training images are shown below, as in the survey's "
        "similarity retrieval (Cerizza et al., 2023, section 5.5).",
        "- **Flags** (⚠) mark what the numbers do not support: see *Flagged rows* under the table.",
        "",
    ]
    lines += _guidance_table(summary)
    lines += _nfe_section(summary, NFE_PICTURE)
    if summary["warnings"]:
        lines += ["**Warnings**", ""] + [f"- {_text(w)}" for w in summary["warnings"]] + [""]
    lines += [
        "## Training",
        "",
        f"{format_value(training['steps'])} steps in {format_value(training['seconds'])} s "
        f"({format_value(training['steps_per_second'])} steps/s); final loss {format_value(training['final_loss'])}, "
        f"validation loss {format_value(training['final_val_loss'])}.",
        "",
    ]
    lines += _precision_lines(summary)
    for title, path, caption in pictures:
        lines += [f"### {_text(title)}", "", f"![{_text(title)}]({path})", "", f"*{caption}*", ""]
    lines += references()
    return "\n".join(lines)


def render_html(markdown_text):
    """A standalone HTML page of the Markdown report (the pictures by relative path).

    Args:
        markdown_text: :func:`render_markdown`'s text.

    Returns:
        The HTML document as a string.
    """
    import markdown

    body = markdown.markdown(markdown_text, extensions=["tables"], output_format="html")
    return (
        "<!doctype html>\n<html><head><meta charset='utf-8'><title>kdiff report</title>"
        f"<style>{_STYLE}</style></head><body>\n{body}\n</body></html>\n"
    )


def write_markdown_and_html(directory, markdown_text):
    """Writes a report's ``report.md`` and its HTML page ``report.html`` into ``directory``.

    Args:
        directory: the report's folder (its pictures beside them, by relative path).
        markdown_text: the report, as Markdown.
    """
    io.write_text(os.path.join(directory, "report.md"), markdown_text + "\n")
    io.write_text(os.path.join(directory, "report.html"), render_html(markdown_text))


def print_headline(report_dir):
    """Prints where a run's report is and its headline numbers (FID, KID, classifier
    statistics per sampler, the held-out real images and the Gaussian baseline); nothing
    when the report has not been written.

    Args:
        report_dir: the Report artifact directory (its ``metrics.json``).
    """
    path = os.path.join(report_dir, "metrics.json")
    if not io.exists(path):
        return
    summary = io.read_json(path)
    print(f"\nReport: {io.abspath(os.path.join(report_dir, 'report.html'))}")
    print(f"Feature space: {summary.get('feature_space')}")

    def rounded(value, digits=3):
        return None if value is None else round(value, digits)

    scale = summary.get("kid_scale") or 1
    label = summary.get("kid_label") or "KID"

    def line(title, row, seconds=""):
        kid = row.get("kid_mean")
        error = row.get("kid_standard_error")
        print(
            f"  {title:>20s}: FID {rounded(row.get('fid'))}  "
            f"{label} {rounded(None if kid is None else kid * scale)}"
            f" ± {'n/a' if error is None else round(error * scale, 3)}{seconds}  "
            f"classifier confidence {rounded(row.get('classifier_confidence'))}  "
            f"class entropy {rounded(row.get('class_entropy'))}"
            + "".join(f"\n  {'':>20s}  ⚠ {flag['code']}: {flag['detail']}" for flag in row.get("flags", []))
        )

    for name, row in summary.get("samplers", {}).items():
        seconds = row.get("seconds")
        line(name, row, f"  time {seconds if seconds is None else round(seconds, 1)} s")
    line("held-out real", summary.get("real_heldout", {}))
    line("Gaussian baseline", summary.get("baseline_gaussian", {}))


def loss_caption(training):
    """The caption of the loss curve (Markdown).

    Args:
        training: :func:`build_summary`'s "training".

    Returns:
        One sentence.
    """
    return (
        f"The training loss (and the validation loss, where recorded) at the end of each of the "
        f"{format_value(training.get('epochs'))} epochs; {format_value(training.get('steps'))} optimizer steps in all."
    )


def picture_caption(kind, name, row, retrieval=None):
    """The caption under a sampler's picture: what it shows, which sampler, how many steps.

    Args:
        kind: "grid", "trajectory" or "retrieval".
        name: the sampler row's name.
        row: its summary row ("sampler", "steps", "num_samples", …).
        retrieval: its ``retrieval.json`` entry (for "retrieval": "knn", "panel").

    Returns:
        Markdown text (one or two sentences).
    """
    who = sampler_phrase(name, row)
    count = row.get("num_samples")
    if kind == "grid":
        shown = count if count is None else min(count, GRID_MAX)
        return f"The first {format_value(shown)} of the {format_value(count)} samples of {who}, one image per tile, unselected."
    if kind == "trajectory":
        return (
            f"Denoising trajectories of {who}: each row is one sample, from the starting noise (left) to the "
            f"final image (right), in {TRAJECTORY_FRAMES} evenly spaced states of the sampling loop."
        )
    retrieval = retrieval or {}
    rows = len((retrieval.get("panel") or {}).get("sample_indices") or []) or "the first"
    return (
        f"Similarity retrieval for {who}: each row is one generated sample (left of the red bar, column "
        f"\"sample\"), then its {format_value(retrieval.get('knn', 'k'))} nearest training images in "
        f"{_text(retrieval.get('feature_space', 'the FID features'))}, nearest first (columns \"1st\", \"2nd\", …); the first {format_value(rows)} samples. A neighbour that "
        "looks like a copy of its sample suggests memorization."
    )


class Executor:
    """Writes the report from the other stages' artifacts."""

    def Do(self, inputs, outputs, params):
        """Writes ``report.md``, ``report.html``, ``metrics.json`` and ``pictures/``.

        Args:
            inputs: the Examples, Model, Samples, Metrics and Retrieval directories.
            outputs: ``{"report": directory}``.
            params: the run's parameters (``SPEC.parameters`` are read).
        """
        stats = io.read_json(os.path.join(inputs["examples"], "stats.json"))
        history = io.read_json(os.path.join(inputs["model"], "history.json"))
        timings = io.read_json(os.path.join(inputs["samples"], "timings.json"))
        metrics = io.read_json(os.path.join(inputs["metrics"], "metrics.json"))
        retrieval = io.read_json(os.path.join(inputs["retrieval"], "retrieval.json"))
        summary = build_summary(stats, history, timings, metrics, retrieval, {k: params[k] for k in SPEC.parameters})
        with io.atomic_directory(outputs["report"]) as out:
            io.makedirs(os.path.join(out, "pictures"), exist_ok=False)
            _loss_curve(history, os.path.join(out, "pictures", "loss.png"))
            pictures = [("Loss curve", "pictures/loss.png", loss_caption(summary["training"]))]
            curves = nfe_curves(summary)
            if curves:
                _nfe_plot(curves, os.path.join(out, NFE_PICTURE))
            for name in timings:
                row = summary["samplers"][name]
                for kind, title in (
                    ("grid", "samples"), ("trajectory", "denoising trajectory"), ("retrieval", "nearest training images")
                ):
                    source = (
                        os.path.join(inputs["retrieval"], "panels", f"{name}.png")
                        if kind == "retrieval"
                        else os.path.join(inputs["samples"], name, f"{kind}.png")
                    )
                    if io.exists(source):
                        path = f"pictures/{name}_{kind}.png"
                        io.copy(source, os.path.join(out, path))
                        pictures.append((f"{name}: {title}", path, picture_caption(kind, name, row, retrieval.get(name))))
            write_markdown_and_html(out, render_markdown(summary, pictures))
            io.write_json(os.path.join(out, "metrics.json"), summary)
        print(f"report: wrote {outputs['report']}/report.md and report.html", flush=True)
