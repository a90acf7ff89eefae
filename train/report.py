"""Reports: evaluation files, curves plotted against compute, and the Markdown tables of experiments.

Every rate is shown with its 95% interval, ``value [low, high]``: a percentile bootstrap
over the problems, or over seeds then problems for the mean of several seeds
(:mod:`.statistics`); curves are drawn with their intervals as bands.
"""

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

    Curves are named ``"<model> <method>"``: one colour per model, one line style per method;
    points that carry ``ci_low`` and ``ci_high`` get their interval drawn as a band.
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
            x = [p[key] for p in points]
            axis.plot(x, [p["accuracy"] for p in points], label=name, **style)
            if all("ci_low" in p for p in points):
                low, high = [p["ci_low"] for p in points], [p["ci_high"] for p in points]
                axis.fill_between(x, low, high, color=style["color"], alpha=0.12, linewidth=0)
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
    """One row per curve point, for printing: its budget, cost and solve rate with its interval."""
    return [
        {
            "curve": name,
            "budget": point.get("budget", point.get("n")),
            **{k: point[k] for k in ("tokens", "flops")},
            "accuracy": with_interval(point["accuracy"], point),
        }
        for name, points in curves.items()
        for point in points
    ]


def stage_label(arm: str, stage: str) -> str:
    """An arm's stage as tables and plots name it: ``dfs`` after SFT, ``dfs+GRPO`` after GRPO."""
    return arm if stage == "sft" else f"{arm}+GRPO"


def with_interval(value: float | None, interval: dict[str, float] | None, digits: int = 3) -> str:
    """``value [ci_low, ci_high]`` (``value`` alone when there is no interval, ``–`` for None)."""
    if value is None:
        return "–"
    if not interval or "ci_low" not in interval:
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{interval['ci_low']:.{digits}f}, {interval['ci_high']:.{digits}f}]"


def rate(summary: dict[str, Any], stat: str | None) -> str:
    """A method summary's ``stat`` with its interval, for tables (``–`` where it has none)."""
    if stat is None or stat not in summary:
        return "–"
    return with_interval(summary[stat], summary.get("intervals", {}).get(stat))


def split_title(split: str) -> str:
    """How a report names the problems of ``split``: the held-out ones, or the training ones."""
    return "held-out" if split == "test" else "training-split"


def problem_set_line(problem_set: dict[str, Any]) -> str:
    """How many distinct problems an evaluation found, how, and how many the split holds."""
    found, scanned = problem_set["distinct"], problem_set["scanned"]
    if problem_set["in_split"] is not None:
        held = f"the split holds {problem_set['in_split']}"
    elif found < problem_set["requested"]:
        held = f"the split holds at least {found}: no more within {problem_set['scan_limit']} items"
    else:
        held = f"the split holds at least {found}"
    asked = "" if found == problem_set["requested"] else f"of {problem_set['requested']} asked for; "
    return f"{found} distinct problems ({asked}{scanned} items scanned; {held})"


def plot_experiment(results: dict[str, Any], path: Path) -> None:
    """One PNG of the curves the experiment's ``plot`` names, for every arm and stage, with their bands."""
    config = results["config"]
    curves = {
        f"{stage_label(arm, stage)} {name}": points
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
    """The experiment's tables: each arm's summary, each seed's (with several), the differences
    between stages with their paired intervals, every curve's solve rate at shared FLOP budgets,
    and the solve rates per breakdown value (CountDown: per target)."""
    seeds = results.get("seeds")
    sections = [_problems_text(results), _summary_table(results, seeds)]
    if seeds:
        sections.append(_seeds_table(results, seeds))
    if results.get("differences"):
        sections.append(_differences_table(results["differences"], seeds))
    sections.append(_budget_table(results))
    sections += [_breakdown_table(results)] if _breakdowns(results) else []
    return "\n\n".join(sections) + "\n"


def _problems_text(results: dict[str, Any]) -> str:
    sets = {
        problem_set_line(result["problem_set"]) for stages in results["arms"].values() for result in stages.values()
    }
    how = results.get("interval") or "95% percentile bootstrap over the problems"
    title = split_title(results.get("config", {}).get("eval", {}).get("split", "test")).capitalize()
    return f"{title} problems: {'; '.join(sorted(sets))}. Intervals: {how}."


def _summary_table(results: dict[str, Any], seeds: list[int] | None) -> str:
    rows = [
        "| arm | greedy solve rate | mean tokens | backtrack rate | pass@1 | best pass@k | train min |",
        "|" + "---|" * 7,
    ]
    for arm, stages in results["arms"].items():
        for stage, result in stages.items():
            cells = _summary_cells(result["summary"])
            rows.append(f"| {stage_label(arm, stage)} | {cells} | {result['train_seconds'] / 60:.1f} |")
    if seeds:
        rows = [f"Mean over seeds {', '.join(map(str, seeds))}:", "", *rows]
    return "\n".join(rows)


def _summary_cells(summary: dict[str, Any]) -> str:
    greedy = summary.get("greedy", {})
    sample = summary.get("sample", {})
    best = widest_pass_at(sample)
    return (
        f"{rate(greedy, 'solve_rate')} | {_fmt(greedy.get('mean_tokens'), 1)} | {_fmt(greedy.get('backtrack_rate'))} "
        f"| {rate(sample, 'pass@1')} | {rate(sample, best) + f' ({best})' if best else '–'}"
    )


def _seeds_table(results: dict[str, Any], seeds: list[int]) -> str:
    rows = [
        "Each seed (intervals over its problems):",
        "",
        "| arm | seed | greedy solve rate | mean tokens | backtrack rate | pass@1 | best pass@k | train min |",
        "|" + "---|" * 8,
    ]
    for arm, stages in results["arms"].items():
        for stage, result in stages.items():
            for seed in seeds:
                run = result["seeds"][str(seed)]
                rows.append(
                    f"| {stage_label(arm, stage)} | {seed} | {_summary_cells(run['summary'])} "
                    f"| {run['train_seconds'] / 60:.1f} |"
                )
    return "\n".join(rows)


def _differences_table(differences: list[dict[str, Any]], seeds: list[int] | None) -> str:
    per_seed = " | per seed" if seeds else ""
    rows = [
        "Differences (to minus from; paired: the same problems resampled together"
        + (", within each drawn seed" if seeds else "")
        + "):",
        "",
        f"| from | to | method | stat | difference [95% CI] | paired{per_seed} |",
        "|" + "---|" * (7 if seeds else 6),
    ]
    for row in differences:
        cells = f"| {row['from']} | {row['to']} | {row['method']} | {row['stat']} "
        cells += f"| {with_interval(row['difference'], row)} | {'yes' if row['paired'] else 'no'} |"
        if seeds:
            cells += " " + ", ".join(f"{value:+.3f}" for value in row["seeds"].values()) + " |"
        rows.append(cells)
    return "\n".join(rows)


def _budget_table(results: dict[str, Any]) -> str:
    curves = {
        f"{stage_label(arm, stage)} {curve}": points
        for arm, stages in results["arms"].items()
        for stage, result in stages.items()
        for curve, points in result["curves"].items()
    }
    lows = [min(p["flops"] for p in points) for points in curves.values()]
    highs = [max(p["flops"] for p in points) for points in curves.values()]
    budgets = _geometric(min(lows), max(highs), 5) if curves else []
    table = ["| curve | " + " | ".join(f"≤{b:.2g} FLOPs" for b in budgets) + " |", "|" + "---|" * (len(budgets) + 1)]
    for name, points in curves.items():
        table.append(f"| {name} | " + " | ".join(_fmt(accuracy_within(points, b)) for b in budgets) + " |")
    return "Solve rate within a compute budget (per problem):\n\n" + "\n".join(table)


def _breakdowns(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        stage_label(arm, stage): result["breakdown"]
        for arm, stages in results["arms"].items()
        for stage, result in stages.items()
        if result.get("breakdown")
    }


def _breakdown_table(results: dict[str, Any]) -> str:
    """One row per breakdown value (target): its problems and each stage's solve rates on them."""
    breakdowns = _breakdowns(results)
    key = next(iter(breakdowns.values()))["by"]
    columns = [(name, rate) for name, table in breakdowns.items() for rate in table["groups"][0] if " " in rate]
    values = sorted({group[key] for table in breakdowns.values() for group in table["groups"]}, key=str)
    rows = [
        f"Solve rate per {key}:",
        "",
        f"| {key} | problems | " + " | ".join(f"{name} {rate}" for name, rate in columns) + " |",
        "|" + "---|" * (len(columns) + 2),
    ]
    for value in values:
        groups = {name: {g[key]: g for g in table["groups"]}.get(value) for name, table in breakdowns.items()}
        problems = next(g["problems"] for g in groups.values() if g)
        cells = [_fmt(groups[name][rate]) if groups[name] else "–" for name, rate in columns]
        rows.append(f"| {value} | {problems} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _geometric(low: float, high: float, count: int) -> list[float]:
    if high <= low:
        return [low]
    ratio = (high / low) ** (1 / (count - 1))
    return [low * ratio**i for i in range(count)]


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def stage_table(results: dict[str, Any], arm: str) -> list[dict[str, Any]]:
    """One row per stage of an arm, for printing: the greedy episodes' solve rate and costs, then
    the sampled solve rate (pass@1) and the widest pass@k, each rate with its interval.

    With several seeds: one row per seed and stage (intervals over that seed's problems), then
    one per stage of the mean over seeds (intervals over seeds and problems).
    """
    seeds = results.get("seeds")
    rows = []
    for stage, result in results["arms"][arm].items():
        runs = [(str(seed), result["seeds"][str(seed)]) for seed in seeds] if seeds else []
        for seed, run in runs:
            rows.append({"seed": seed, **_stage_row(stage, run["summary"], run["train_seconds"])})
    for stage, result in results["arms"][arm].items():
        row = _stage_row(stage, result["summary"], result["train_seconds"])
        rows.append({"seed": "mean", **row} if seeds else row)
    return rows


def _stage_row(stage: str, summary: dict[str, Any], train_seconds: float) -> dict[str, Any]:
    keys = ("mean_tokens", "backtrack_rate", "invalid_steps")
    widest = widest_pass_at(summary["sample"])
    return {
        "stage": stage,
        "solve_rate": rate(summary["greedy"], "solve_rate"),
        **{key: summary["greedy"][key] for key in keys},
        # The dead-end labels' measures (results from before them have none: "–").
        "dead_end_steps": rate(summary["greedy"], "dead_end_steps"),
        "backtrack_precision": rate(summary["greedy"], "backtrack_precision"),
        "recovery_rate": rate(summary["greedy"], "recovery_rate"),
        "sampled": rate(summary["sample"], "pass@1"),
        widest: rate(summary["sample"], widest),
        "train_seconds": train_seconds,
    }
