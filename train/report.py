"""Reports: evaluation files, curves plotted against compute, and the Markdown tables of experiments."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from backtrack_gym.train.data import atomic_write


def write_report(report: dict[str, Any], output_dir: Path, label: str) -> None:
    """``eval.json`` (atomically), ``curves.png`` and TensorBoard scalars of one model's report."""
    text = json.dumps(report, indent=1, default=str)
    atomic_write(output_dir / "eval.json", lambda path: path.write_text(text))
    curves = {f"{label} {name}": points for name, points in report["curves"].items()}
    plot_curves(curves, output_dir / "curves.png", title=label)
    write_curves_tensorboard(curves, output_dir / "tensorboard")


LINESTYLES = {"greedy": "-", "sampled": ":", "best_of_n": "--", "maj_of_n": "-.", "search": "-"}


def plot_curves(curves: dict[str, list[dict[str, float]]], path: Path, *, title: str = "") -> None:
    """Solve rate against mean tokens and against mean FLOPs per problem, as a PNG.

    Curves are named ``"<model> <method>"``: one colour per model, one line style per method.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(name.rsplit(" ", 1)[0] for name in curves))
    colours = plt.get_cmap("tab10")
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, points in curves.items():
        model, _, method = name.rpartition(" ")
        style = {
            "color": colours(models.index(model) % 10),
            "linestyle": LINESTYLES.get(method, "-"),
            "marker": "s" if method == "search" else "o",
            "markersize": 4,
        }
        for axis, key in zip(axes, ("tokens", "flops"), strict=True):
            axis.plot([p[key] for p in points], [p["accuracy"] for p in points], label=name, **style)
    for axis, label in zip(axes, ("model tokens per problem", "FLOPs per problem"), strict=True):
        axis.set_xscale("log")
        axis.set_xlabel(label)
        axis.set_ylabel("solve rate")
        axis.set_ylim(0, 1)
        axis.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    figure.suptitle(title)
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=110, format="png"))
    plt.close(figure)


def write_curves_tensorboard(curves: dict[str, list[dict[str, float]]], log_dir: Path) -> None:
    """Each curve as scalars: accuracy against tokens (step = tokens) and kFLOPs (step = kFLOPs)."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(log_dir))
    for name, points in curves.items():
        tag = name.replace(" ", "/")
        for point in points:
            writer.add_scalar(f"{tag}/accuracy_vs_tokens", point["accuracy"], round(point["tokens"]))
            writer.add_scalar(f"{tag}/accuracy_vs_kflops", point["accuracy"], round(point["flops"] / 1e3))
    writer.close()


def curve_table(curves: dict[str, list[dict[str, float]]]) -> list[dict[str, Any]]:
    """One row per curve point, for printing."""
    return [
        {
            "curve": name,
            "budget": point.get("budget", point.get("n")),
            **{k: point[k] for k in ("tokens", "flops", "accuracy")},
        }
        for name, points in curves.items()
        for point in points
    ]


def plot_experiment(results: dict[str, Any], path: Path) -> None:
    """One PNG of the curves the experiment's ``plot`` names, for every arm and stage."""
    config = results["config"]
    curves = {
        f"{arm}{'' if stage == 'sft' else '+GRPO'} {name}": points
        for arm, stages in results["arms"].items()
        for stage, result in stages.items()
        for name, points in result["curves"].items()
        if name in config["plot"]
    }
    plot_curves(curves, path, title=config["name"])


def widest_pass_at(sample_summary: dict[str, Any]) -> str | None:
    """The key of the largest k among a sampled summary's ``pass@k`` entries (None: there are none)."""
    keys = [key for key in sample_summary if key.startswith("pass@")]
    return max(keys, key=lambda key: int(key[5:]), default=None)


def accuracy_within(points: list[dict[str, float]], flops: float) -> float | None:
    """The best solve rate a curve reaches spending at most ``flops`` per problem (None: none that cheap)."""
    affordable = [p["accuracy"] for p in points if p["flops"] <= flops * (1 + 1e-9)]
    return max(affordable) if affordable else None


def results_markdown(results: dict[str, Any]) -> str:
    """Two Markdown tables: each arm's summary, and every curve's solve rate at shared FLOP budgets."""
    rows = [
        "| arm | greedy solve rate | mean tokens | backtrack rate | pass@1 | best pass@k | train min |",
        "|" + "---|" * 7,
    ]
    curves: dict[str, list[dict[str, float]]] = {}
    for arm, stages in results["arms"].items():
        for stage, result in stages.items():
            name = arm if stage == "sft" else f"{arm}+GRPO"
            summary = result["summary"]
            greedy = summary.get("greedy", {})
            sample = summary.get("sample", {})
            best = widest_pass_at(sample)
            rows.append(
                f"| {name} | {_fmt(greedy.get('solve_rate'))} | {_fmt(greedy.get('mean_tokens'), 1)} "
                f"| {_fmt(greedy.get('backtrack_rate'))} | {_fmt(sample.get('pass@1'))} "
                f"| {_fmt(sample.get(best)) + f' ({best})' if best else '–'} | {result['train_seconds'] / 60:.1f} |"
            )
            curves.update({f"{name} {curve}": points for curve, points in result["curves"].items()})
    lows = [min(p["flops"] for p in points) for points in curves.values()]
    highs = [max(p["flops"] for p in points) for points in curves.values()]
    budgets = _geometric(min(lows), max(highs), 5) if curves else []
    table = ["| curve | " + " | ".join(f"≤{b:.2g} FLOPs" for b in budgets) + " |", "|" + "---|" * (len(budgets) + 1)]
    for name, points in curves.items():
        table.append(f"| {name} | " + " | ".join(_fmt(accuracy_within(points, b)) for b in budgets) + " |")
    return "\n".join(rows) + "\n\nSolve rate within a compute budget (per problem):\n\n" + "\n".join(table) + "\n"


def _geometric(low: float, high: float, count: int) -> list[float]:
    if high <= low:
        return [low]
    ratio = (high / low) ** (1 / (count - 1))
    return [low * ratio**i for i in range(count)]


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def stage_table(results: dict[str, Any], arm: str) -> list[dict[str, Any]]:
    """One row per stage of an arm, for printing: the greedy episodes' solve rate and costs, then
    the sampled solve rate (pass@1) and the widest pass@k."""
    keys = ("solve_rate", "mean_tokens", "backtrack_rate", "invalid_steps")
    rows = []
    for stage, result in results["arms"][arm].items():
        summary = result["summary"]
        widest = widest_pass_at(summary["sample"])
        rows.append(
            {
                "stage": stage,
                **{key: summary["greedy"][key] for key in keys},
                "sampled": summary["sample"]["pass@1"],
                widest: summary["sample"][widest],
                "train_seconds": result["train_seconds"],
            }
        )
    return rows
