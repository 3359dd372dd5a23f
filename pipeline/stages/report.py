"""Report stage: report.md, report.html and metrics.json — the seed's Table 2 at small scale."""

from __future__ import annotations

import html
import os
import shutil

from pipeline.stages.base import (
    EXAMPLES, METRICS, MODEL, REPORT, RETRIEVAL, SAMPLES, StageSpec, atomic_directory, read_json, write_json,
)

SPEC = StageSpec(
    name="report",
    inputs={"examples": EXAMPLES, "model": MODEL, "samples": SAMPLES, "metrics": METRICS, "retrieval": RETRIEVAL},
    outputs={"report": REPORT},
    parameters=("dataset", "family", "network", "image_size", "epochs", "batch_size", "seed"),
)


def _fmt(value, digits=3):
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def _loss_curve(history, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3))
    epochs = range(1, len(history.get("loss", [])) + 1)
    axis.plot(epochs, history.get("loss", []), label="train loss")
    if history.get("val_loss"):
        axis.plot(epochs, history["val_loss"], label="validation loss")
    axis.set_xlabel("epoch")
    axis.set_ylabel("loss")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def build_summary(stats, history, timings, metrics, retrieval, params):
    """The numbers of the run, as ``metrics.json`` stores them.

    Returns:
        A dict with "run", "training", "samplers" (per sampler: FID, KID, time, classifier
        statistics, memorization), "real_heldout", "baseline_gaussian", "feature_space",
        "warnings".
    """
    samplers = {}
    for name, timing in timings.items():
        row = dict(timing)
        row.update(metrics.get("samplers", {}).get(name, {}))
        row.update({f"retrieval_{k}": v for k, v in retrieval.get(name, {}).items() if not isinstance(v, (dict, list))})
        samplers[name] = row
    return {
        "run": {**params, "num_train": stats.get("num_train"), "num_eval": stats.get("num_eval")},
        "training": {
            "seconds": history.get("seconds"),
            "steps": history.get("steps"),
            "steps_per_second": history.get("steps_per_second"),
            "final_loss": (history.get("loss") or [None])[-1],
            "final_val_loss": (history.get("val_loss") or [None])[-1],
        },
        "samplers": samplers,
        "real_heldout": metrics.get("real_heldout", {}),
        "baseline_gaussian": metrics.get("baseline_gaussian", {}),
        "classifier_accuracy_heldout": metrics.get("classifier_accuracy_heldout"),
        "feature_space": metrics.get("feature_space"),
        "num_real": metrics.get("num_real"),
        "warnings": metrics.get("warnings", []),
    }


def _markdown(summary, pictures):
    run, training = summary["run"], summary["training"]
    lines = [
        f"# kdiff run: {run['family']} on {run['dataset']}",
        "",
        f"{run.get('num_train')} training / {run.get('num_eval')} held-out images at "
        f"{run['image_size']}×{run['image_size']}; network `{run['network']}`; "
        f"{run['epochs']} epochs, batch {run['batch_size']}, seed {run['seed']}.",
        "",
        "## Samplers (the seed's Table 2 at small scale)",
        "",
        f"Feature space: {summary.get('feature_space')}. Real reference images: {summary.get('num_real')}.",
        "",
        "| sampler | steps | FID ↓ | KID ↓ | sampling time (s) | images/s | classifier confidence | classes present | memorization |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in summary["samplers"].items():
        kid = row.get("kid_mean")
        kid_text = f"{_fmt(kid)} ± {_fmt(row.get('kid_std'))}" if kid is not None else "–"
        lines.append(
            f"| {name} | {_fmt(row.get('steps'))} | {_fmt(row.get('fid'))} | {kid_text} | "
            f"{_fmt(row.get('seconds'))} | {_fmt(row.get('images_per_second'))} | "
            f"{_fmt(row.get('classifier_confidence'))} | {_fmt(row.get('num_classes_present'))} | "
            f"{_fmt(row.get('retrieval_memorization_ratio'))} |"
        )
    real, base = summary["real_heldout"], summary["baseline_gaussian"]
    lines += [
        f"| *held-out real images* | – | {_fmt(real.get('fid'))} | – | – | – | "
        f"{_fmt(real.get('classifier_confidence'))} | {_fmt(real.get('num_classes_present'))} | – |",
        f"| *Gaussian fit to the pixels (baseline)* | – | {_fmt(base.get('fid'))} | {_fmt(base.get('kid_mean'))} | – | – | "
        f"{_fmt(base.get('classifier_confidence'))} | {_fmt(base.get('num_classes_present'))} | – |",
        "",
        f"Classifier accuracy on held-out real images: {_fmt(summary.get('classifier_accuracy_heldout'))}. "
        "The held-out row's FID uses only the held-out split (a small set inflates FID), so "
        "compare samplers with each other and with the baseline. "
        "Memorization: the share of samples whose nearest training image is closer than the "
        "typical train–train nearest-neighbour distance.",
        "",
    ]
    if summary["warnings"]:
        lines += ["**Warnings**", ""] + [f"- {w}" for w in summary["warnings"]] + [""]
    lines += [
        "## Training",
        "",
        f"{_fmt(training['steps'])} steps in {_fmt(training['seconds'])} s "
        f"({_fmt(training['steps_per_second'])} steps/s); final loss {_fmt(training['final_loss'])}, "
        f"validation loss {_fmt(training['final_val_loss'])}.",
        "",
    ]
    for title, path in pictures:
        lines += [f"### {title}", "", f"![{title}]({path})", ""]
    return "\n".join(lines)


def _html(markdown_text, pictures):
    """A self-contained HTML page: the markdown table rendered, the pictures inline."""
    body, table = [], []

    def flush_table():
        if table:
            rows = [r for r in table if not set(r.replace("|", "").strip()) <= set("-")]
            cells = [[html.escape(c.strip()) for c in r.strip("|").split("|")] for r in rows]
            out = ["<table>", "<tr>" + "".join(f"<th>{c}</th>" for c in cells[0]) + "</tr>"]
            out += ["<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in cells[1:]]
            body.append("\n".join(out + ["</table>"]))
            table.clear()

    for line in markdown_text.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush_table()
        if line.startswith("!["):
            alt, src = line[2:].split("](")
            body.append(f'<img alt="{html.escape(alt)}" src="{html.escape(src[:-1])}" style="image-rendering: pixelated">')
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.startswith("- "):
            body.append(f"<li>{html.escape(line[2:])}</li>")
        elif line.strip():
            body.append(f"<p>{html.escape(line).replace('**', '')}</p>")
    flush_table()
    style = "body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>kdiff report</title><style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"


class Executor:
    """Writes the report from the other stages' artifacts."""

    def Do(self, inputs, outputs, params):
        stats = read_json(os.path.join(inputs["examples"], "stats.json"))
        history = read_json(os.path.join(inputs["model"], "history.json"))
        timings = read_json(os.path.join(inputs["samples"], "timings.json"))
        metrics = read_json(os.path.join(inputs["metrics"], "metrics.json"))
        retrieval = read_json(os.path.join(inputs["retrieval"], "retrieval.json"))
        summary = build_summary(stats, history, timings, metrics, retrieval, {k: params[k] for k in SPEC.parameters})
        with atomic_directory(outputs["report"]) as out:
            pictures = []
            os.makedirs(os.path.join(out, "pictures"))
            _loss_curve(history, os.path.join(out, "pictures", "loss.png"))
            pictures.append(("Loss curve", "pictures/loss.png"))
            for name in timings:
                for kind, title in (("grid", "samples"), ("trajectory", "denoising trajectory")):
                    source = os.path.join(inputs["samples"], name, f"{kind}.png")
                    if os.path.exists(source):
                        shutil.copy(source, os.path.join(out, "pictures", f"{name}_{kind}.png"))
                        pictures.append((f"{name}: {title}", f"pictures/{name}_{kind}.png"))
                panel = os.path.join(inputs["retrieval"], "panels", f"{name}.png")
                if os.path.exists(panel):
                    shutil.copy(panel, os.path.join(out, "pictures", f"{name}_retrieval.png"))
                    pictures.append((f"{name}: nearest training images", f"pictures/{name}_retrieval.png"))
            text = _markdown(summary, pictures)
            with open(os.path.join(out, "report.md"), "w", encoding="utf-8") as f:
                f.write(text + "\n")
            with open(os.path.join(out, "report.html"), "w", encoding="utf-8") as f:
                f.write(_html(text, pictures))
            write_json(os.path.join(out, "metrics.json"), summary)
        print(f"report: wrote {outputs['report']}/report.md and report.html", flush=True)
