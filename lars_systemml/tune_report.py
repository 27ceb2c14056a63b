"""The report of a tuning protocol, generated from its results.csv: summary.md and figures.

- ``summary.md``: the protocol, the search space, per batch size the chosen trial of every
  optimizer with its finals (test accuracy mean ± sample sd over the final seeds), the
  comparison of the best layer-wise optimizer (LARS, LAMB) with each of the others (Welch's
  t-test over the seeds) and a verdict sentence derived from its intervals, the runs of the
  same task in the protocol's ``reference`` folders (shown, not compared), every trial's
  settings and accuracies, and the compute used.
- ``finals_b<B>.png/svg``: per batch size, every final run's test accuracy and the mean ± sd
  per optimizer.
- ``finals_loss_b<B>.png/svg``: per batch size, the training loss per step of every final
  run (from its steps.csv), one panel per optimizer: a chosen configuration that is unstable
  over the full budget shows here.
- ``best_so_far_b<B>.png/svg``: per batch size, the best test error of the first k trials'
  first runs (the runs the selection starts from) against k, one line per optimizer: how
  much each optimizer needs the tuning.

The selections shown are recomputed by ``tune.progress``, the code the tuner selects with.
Every file is written under a temporary name and renamed into place (fsutil), so a failure
(a full disk) leaves the earlier report as it was; a garbled results.csv is a one-line error
naming its file and line (results.read_results).
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path

from .config import TrainConfig
from .errors import UserError
from .fsutil import write_text_atomically
from .results import read_results
from .schedules import scaled_lr
from .stats import Difference, welch
from .tune import CellProgress, Protocol, progress, score

LAYERWISE = ("lars", "lamb")


def _pct(row: dict | None) -> str:
    if row is None:
        return ""
    return "diverged" if score(row) == -math.inf else f"{100 * score(row):.2f}"


def rows_stats(rows: list[dict]) -> dict | None:
    """Test accuracy mean and sample sd (fractions; sd None for one run), n and train mean of
    finished runs' rows; any diverged run makes the group diverged. None for no rows."""
    if not rows:
        return None
    tests = [score(r) for r in rows]
    if any(t == -math.inf for t in tests):
        return {"mean": -math.inf, "sd": None, "n": len(tests), "train": math.nan, "diverged": True}
    trains = [float(r["train_accuracy"]) for r in rows]
    return {"mean": statistics.fmean(tests), "sd": statistics.stdev(tests) if len(tests) > 1 else None,
            "n": len(tests), "train": statistics.fmean(trains), "diverged": False}


def finals_stats(p: CellProgress) -> dict | None:
    """``rows_stats`` of the cell's finals."""
    return rows_stats(list(p.finals.values()))


def _finals_text(stats: dict | None) -> str:
    if stats is None:
        return ""
    if stats["diverged"]:
        return f"diverged ({stats['n']})"
    spread = f" ± {100 * stats['sd']:.2f}" if stats["sd"] is not None else ""
    return f"{100 * stats['mean']:.2f}{spread} ({stats['n']})"


def states(protocol: Protocol, output: Path) -> dict[tuple[str, int], CellProgress]:
    results = output / "results.csv"
    rows = {row["run_id"]: row for row in read_results(results, complete=True)}
    if not rows:
        raise UserError(f"{results} has no results: run `lars-systemml tune --config {protocol.source}` first")
    return {(o, b): progress(protocol, o, b, rows, results) for o, b in protocol.cells()}


def _finals_values(p: CellProgress) -> list[float]:
    return [score(r) for _, r in sorted(p.finals.items())]


def _points(fraction: float) -> str:
    """A difference of accuracies in signed points, 2 decimals; more where 2 would round a
    bound that decides the verdict to +-0.00 (e.g. +0.002 rather than +0.00)."""
    points = 100 * fraction
    return f"{points:+.2f}" if points == 0 or abs(points) >= 0.005 else f"{points:+.1g}"


def _ci_text(d: Difference) -> str:
    if not d.tested:
        return ""
    return f"[{_points(d.low)}, {_points(d.high)}]"


def comparison(protocol: Protocol, cells: dict, batch: int) -> list[str] | None:
    """Each layer-wise optimizer with finals (best first) against every other optimizer with finals.

    Markdown lines: the two best, per layer-wise optimizer a table of the differences (points,
    Welch's 95% CI and p over the seeds) and a verdict sentence derived from the intervals;
    None until a layer-wise optimizer and another have finals.
    """
    finals = {o: finals_stats(cells[(o, batch)]) for o in protocol.optimizers}
    layerwise = [o for o in finals if o in LAYERWISE and finals[o] is not None]
    others = [o for o in finals if o not in LAYERWISE and finals[o] is not None]
    if not layerwise or not others:
        return None
    alive = {o: s for o, s in finals.items() if s is not None and not s["diverged"]}
    diverged = [o for o in layerwise + others if o not in alive]
    diverged_text = f"the finals of {', '.join(diverged)} diverged"
    if not [o for o in layerwise if o in alive]:
        return [f"Verdict at batch {batch}: {diverged_text}."]
    ranked_layerwise = sorted((o for o in layerwise if o in alive), key=lambda o: -alive[o]["mean"])
    best = ranked_layerwise[0]
    alive_others = [o for o in others if o in alive]
    top = max(alive_others, key=lambda o: alive[o]["mean"]) if alive_others else None
    best_other = f"{top} {_finals_text(alive[top])}" if top else "none (their finals diverged)"
    lines = [f"Best layer-wise optimizer: {best} {_finals_text(alive[best])}; best of the others: {best_other}.", ""]
    n = min(alive[o]["n"] for o in ranked_layerwise + alive_others)
    for mine in ranked_layerwise:
        table, groups = _against_others(mine, alive_others, alive, cells, batch)
        said = _verdict(mine, *groups)
        lines += table
        if diverged:
            said.append(diverged_text)
        lines += [f"Verdict at batch {batch} ({n} or more seeds per compared optimizer): " + "; ".join(said) + ".", ""]
    return lines[:-1]


def _against_others(mine: str, others: list[str], alive: dict, cells: dict,
                    batch: int) -> tuple[list[str], tuple[list, list, list, list]]:
    """The table of ``mine`` minus each other optimizer's finals mean (points, Welch's 95% CI
    and p), and the others ``mine`` is ahead of, level with, behind and untested against."""
    groups: tuple[list, list, list, list] = ([], [], [], [])
    if not others:
        return [], groups
    lines = [f"{mine} against each other optimizer: difference of the finals' mean test accuracy in points "
             f"({mine} minus the other), Welch's t-test over the seeds.", "",
             "| other optimizer | finals test (n) | difference | 95% CI | p |", "|---|---|---|---|---|"]
    ahead, level, behind, untested = groups
    for other in others:
        d = welch(_finals_values(cells[(mine, batch)]), _finals_values(cells[(other, batch)]))
        p = f"{d.p:.3g}" if d.tested else "n/a (one seed or no spread)"
        lines.append(f"| {other} | {_finals_text(alive[other])} | {100 * d.diff:+.2f} | {_ci_text(d)} | {p} |")
        (untested if not d.tested else ahead if d.low > 0 else behind if d.high < 0 else level).append(other)
    return lines + [""], groups


def _verdict(mine: str, ahead: list, level: list, behind: list, untested: list) -> list[str]:
    said = []
    if ahead:
        said.append(f"{mine} is ahead of {', '.join(ahead)} (95% CI above 0)")
    if level:
        said.append(f"{mine} is not separated from {', '.join(level)} (95% CI includes 0)")
    if behind:
        said.append(f"{mine} is behind {', '.join(behind)} (95% CI below 0)")
    if untested:
        said.append(f"{mine} is untested against {', '.join(untested)} (needs 2 or more seeds with spread)")
    return said


# what makes a run of another folder the same task as a cell's runs (its settings may differ)
TASK_FIELDS = ("optimizer", "batch_size", "dataset", "train_size", "test_size", "subset", "epochs", "model",
               "model_options", "parallel_batches", "standardize", "precision")


def _as_written(value) -> str:
    return "" if value is None else str(value)


def reference_rows(protocol: Protocol) -> dict[str, list[dict] | None]:
    """The complete rows of each ``protocol.reference`` folder's results.csv, read once per
    report; a folder without results.csv maps to None."""
    return {folder: read_results(Path(folder) / "results.csv", complete=True)
            if (Path(folder) / "results.csv").is_file() else None for folder in protocol.reference}


def reference_lines(protocol: Protocol, batch: int, references: dict[str, list[dict] | None]) -> list[str]:
    """Runs in ``references`` (reference_rows) of the same task as the cells at ``batch`` (any
    settings; seeds grouped), as a table beside the finals: not part of the protocol."""
    if not references:
        return []
    names = sorted(protocol.space)
    lines = [f"Reference, not part of the protocol and not tuned with its budget: runs of the same data, model, "
             f"batch size and epochs in {', '.join(protocol.reference)} (test accuracy in %, mean ± sd over "
             f"seeds (n); lr is the peak lr).", "",
             "| optimizer | folder | " + " | ".join(names) + " | test (n) |", "|" + "---|" * (len(names) + 3)]
    found = 0
    for opt in protocol.optimizers:
        task = protocol.full_run(opt, batch, 1).config.as_dict()
        wanted = {k: _as_written(task[k]) for k in TASK_FIELDS}
        for folder, folder_rows in references.items():
            if folder_rows is None:
                continue
            groups: dict[tuple, list[dict]] = {}
            for row in folder_rows:
                if all(_as_written(row.get(k, "")) == v for k, v in wanted.items()):
                    settings = tuple((k, row.get(k, "")) for k in TrainConfig.field_names() if k != "seed")
                    groups.setdefault(settings, []).append(row)
            for rows in groups.values():
                first = rows[0]
                peak = scaled_lr(float(first["lr"]), batch, int(first["base_batch"]) if first.get("base_batch") else None,
                                 first.get("lr_scaling") or "none")
                values = {**{n: first.get(n, "") for n in names}, "lr": f"{peak:.4g}"}
                lines.append(f"| {opt} | {folder} | " + " | ".join(str(values[n]) for n in names)
                             + f" | {_finals_text(rows_stats(rows))} |")
                found += 1
    missing = [folder for folder, folder_rows in references.items() if folder_rows is None]
    if missing:
        lines += ["", f"(no results.csv in {', '.join(missing)})"]
    return lines + [""] if found or missing else []


FIGURE_TITLES = {"finals": "finals", "finals_loss": "training loss of the finals",
                 "best_so_far": "best so far vs number of trials"}


def summary_markdown(protocol: Protocol, cells: dict, rows: list[dict],
                     figures: dict[int, list[Path]] | None = None) -> str:
    """summary.md's text; ``figures``: per batch size, the figure files written beside it (linked)."""
    names = sorted(protocol.space)
    lines = [f"# {protocol.name}: equal-budget tuning", "",
             "Generated by `lars-systemml tune` from results.csv; do not edit by hand.", "",
             f"Protocol ({protocol.source}): {protocol.describe()}.", ""]
    if protocol.description:
        lines += [protocol.description, ""]
    fixed = {k: v for k, v in protocol.base.items()}
    lines += ["Fixed for every run: " + ", ".join(f"{k} = {v}" for k, v in fixed.items()) + "."]
    for opt, table in protocol.overrides.items():
        lines.append(f"Fixed for {opt}: " + ", ".join(f"{k} = {v}" for k, v in table.items()) + ".")
    lines += ["", "## Search space", "", "| field | " + " | ".join(protocol.optimizers) + " |",
              "|" + "---|" * (len(protocol.optimizers) + 1)]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(str(protocol.space_for(o)[name]) for o in protocol.optimizers) + " |")
    lines.append("")
    first = "screen" if protocol.halving else "first run"
    references = reference_rows(protocol)
    for batch in sorted(protocol.batch_sizes, reverse=True):
        steps = {r["steps"] for r in rows if r.get("stage") in ("full", "final") and r["batch_size"] == str(batch)}
        lines += [f"## Batch {batch}" + (f" ({', '.join(sorted(steps))} steps per full run)" if steps else ""), "",
                  f"Test accuracy in %. {first}: the chosen trial's {first} run; finals: mean ± sample sd "
                  f"over seeds {', '.join(map(str, protocol.final_seeds))} (n).", "",
                  "| optimizer | trials run | chosen trial | " + " | ".join(names)
                  + f" | {first} test | finals test (n) | finals train |",
                  "|" + "---|" * (len(names) + 6)]
        for opt in protocol.optimizers:
            p = cells[(opt, batch)]
            stats = finals_stats(p)
            chosen = p.best
            values = protocol.trial_values(opt, chosen) if chosen else {}
            train = "" if stats is None or stats["diverged"] else f"{100 * stats['train']:.2f}"
            lines.append(f"| {opt} | {len(p.screen)}/{protocol.trials} | {f't{chosen}' if chosen else ''} | "
                         + " | ".join(f"{values[n]:g}" if isinstance(values.get(n), float) else str(values.get(n, ""))
                                      for n in names)
                         + f" | {_pct(p.screen.get(chosen)) if chosen else ''} | {_finals_text(stats)} | {train} |")
        verdict = comparison(protocol, cells, batch) or [
            "No comparison yet: it needs finals of a layer-wise optimizer and of another."]
        lines += [""] + verdict + [""]
        pngs = [f for f in (figures or {}).get(batch, []) if f.suffix == ".png"]
        if pngs:
            lines += ["Figures: " + ", ".join(f"[{FIGURE_TITLES[f.stem.rsplit('_b', 1)[0]]}]({f.name})"
                                              for f in pngs) + ".", ""]
        lines += reference_lines(protocol, batch, references)

    lines += ["## Every trial", "",
              f"Test accuracy in % of each trial's {first} run"
              + (f" ({protocol.rung_epochs} epochs) and, for the continued trials, its full run "
                 f"({protocol.epochs} epochs)" if protocol.halving else f" ({protocol.epochs} epochs)")
              + "; * marks the chosen trial. Settings are the full runs'"
              + (f"; a screen run's warmup is scaled by {protocol.rung_epochs}/{protocol.epochs}" if protocol.halving else "")
              + ".", ""]
    for batch in sorted(protocol.batch_sizes, reverse=True):
        lines += [f"### Batch {batch}", "", "| optimizer | trial | " + " | ".join(names)
                  + f" | {first} test" + (" | full test" if protocol.halving else "") + " |",
                  "|" + "---|" * (len(names) + 3 + protocol.halving)]
        for opt in protocol.optimizers:
            p = cells[(opt, batch)]
            for trial in range(1, protocol.trials + 1):
                values = protocol.trial_values(opt, trial)
                mark = "*" if trial == p.best else ""
                cells_text = [f"{values[n]:g}" if isinstance(values[n], float) else str(values[n]) for n in names]
                cells_text.append(_pct(p.screen.get(trial)))
                if protocol.halving:
                    cells_text.append(_pct(p.full.get(trial)))
                lines.append(f"| {opt} | t{trial}{mark} | " + " | ".join(cells_text) + " |")
        lines.append("")
    seconds = sum(run_seconds(r) for r in rows)
    runs = sum(len(p.screen) + len([t for t in p.full if p.full[t] is not p.screen.get(t)])
               + len([s for s in p.finals if s != protocol.seed]) for p in cells.values())
    complete = sum(p.complete(protocol) for p in cells.values())
    lines += ["## Compute", "",
              f"{runs} runs of the protocol in results.csv ({complete} of {len(cells)} cells complete); "
              f"their time adds up to {seconds / 3600:.1f} h (each run's wall time; for a run resumed "
              f"from a checkpoint, its training time over all its attempts).", ""]
    return "\n".join(lines)


def run_seconds(row: dict) -> float:
    """The seconds one results row cost: its wall time, or its training time if that is longer.

    A run resumed from a checkpoint records the wall time of its last attempt only, while its
    training time (``train_seconds``, the DML loop's clock) carries over from the checkpoint.
    """
    return max((float(row[key]) for key in ("wall_seconds", "train_seconds") if row.get(key)), default=0.0)


def plot_best_so_far(protocol: Protocol, cells: dict, batch: int, out: Path) -> list[Path]:
    """Best test error of the first k trials' first runs against k, per optimizer (log-scale y)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from .plot import _save

    if not any(cells[(o, batch)].screen for o in protocol.optimizers):
        return []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    k = np.arange(1, protocol.trials + 1)
    for i, opt in enumerate(protocol.optimizers):
        p = cells[(opt, batch)]
        if not p.screen:
            continue
        error = np.array([100 * (1 - score(p.screen[t])) if t in p.screen and score(p.screen[t]) > -math.inf
                          else np.nan for t in k])
        run = [t in p.screen for t in k]
        best = np.fmin.accumulate(np.where(np.isnan(error), np.inf, error))
        best = np.where(np.isinf(best) | ~np.array(run), np.nan, best)
        (line,) = ax.plot(k, best, drawstyle="steps-post", marker="o", ms=4, color=f"C{i}", label=opt)
        ax.scatter(k, error, s=14, color=line.get_color(), alpha=0.35)
    ax.set_yscale("log")
    from matplotlib.ticker import LogFormatter

    # plain numbers (errors in %), the minor ticks labelled too when the range is under two decades
    ax.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
    ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    ax.set_xticks(k)
    ax.set_xlabel("number of trials")
    epochs = protocol.rung_epochs if protocol.halving else protocol.epochs
    ax.set_ylabel(f"best test error so far (%, {epochs}-epoch runs)")
    ax.set_title(f"Batch {batch}: best of the first k trials ({protocol.name}; dots: each trial)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out, f"best_so_far_b{batch}")


def plot_finals(protocol: Protocol, cells: dict, batch: int, out: Path) -> list[Path]:
    """Every final run's test accuracy (dots) and the mean ± sample sd per optimizer (bar)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plot import _save

    if not any(cells[(o, batch)].finals for o in protocol.optimizers):
        return []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, opt in enumerate(protocol.optimizers):
        values = [100 * v for v in _finals_values(cells[(opt, batch)])]
        alive = [v for v in values if v > -math.inf]
        if len(alive) < len(values):
            ax.annotate(f"{len(values) - len(alive)} diverged", (i, 0), xycoords=("data", "axes fraction"),
                        xytext=(0, 4), textcoords="offset points", ha="center", fontsize=8, color=f"C{i}")
        if not alive:
            continue
        # seeds spread sideways a little so that equal values stay visible
        offsets = [0.08 * (j - (len(alive) - 1) / 2) for j in range(len(alive))]
        ax.scatter([i + o for o in offsets], alive, s=18, color=f"C{i}", alpha=0.6, zorder=3)
        sd = statistics.stdev(alive) if len(alive) > 1 else 0.0
        ax.errorbar([i + 0.3], [statistics.fmean(alive)], yerr=[sd], fmt="D", ms=6, capsize=4,
                    color=f"C{i}", zorder=4)
    ax.set_xticks(range(len(protocol.optimizers)), protocol.optimizers)
    ax.set_xlim(-0.6, len(protocol.optimizers) - 0.4)
    ax.set_ylabel(f"test accuracy (%, {protocol.epochs} epochs)")
    seeds = ", ".join(map(str, protocol.final_seeds))
    ax.set_title(f"Batch {batch}: finals of each optimizer's chosen trial ({protocol.name}; "
                 f"dots: seeds {seeds}; diamond: mean ± sd)", fontsize=9)
    ax.grid(True, axis="y", alpha=0.3)
    return _save(fig, out, f"finals_b{batch}")


def finals_losses(cells: dict, batch: int, optimizers: list[str], output: Path) -> dict[str, list[tuple]]:
    """Per optimizer, each final seed's (seed, step, batch loss in nats) from its run folder's
    step trace under ``output/runs/``; seeds whose run wrote no trace are left out."""
    from .plot import step_trace

    losses = {}
    for opt in optimizers:
        for seed, row in sorted(cells[(opt, batch)].finals.items()):
            trace = step_trace(output / "runs" / row["run_id"])
            if trace is not None:
                losses.setdefault(opt, []).append((seed, trace["step"], trace["batch_loss"]))
    return losses


def plot_finals_loss(protocol: Protocol, cells: dict, batch: int, out: Path) -> list[Path]:
    """The training loss per step of every final run, one panel per optimizer (log-scale y):
    whether a chosen configuration trains stably over the full budget, which a screen of
    fewer epochs does not show."""
    losses = finals_losses(cells, batch, protocol.optimizers, out)
    if not losses:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plot import _save

    # one panel per optimizer of the protocol, so that the layout stays while cells finish
    optimizers = protocol.optimizers
    fig, axes = plt.subplots(1, len(optimizers), figsize=(2.6 * len(optimizers) + 1, 3.6),
                             sharex=True, sharey=True, squeeze=False)
    for ax, opt in zip(axes[0], optimizers):
        for j, (seed, step, loss) in enumerate(losses.get(opt, [])):
            ax.plot(step, loss, lw=1, color=f"C{j}", label=f"seed {seed}")
        if opt in losses:
            ax.set_title(f"{opt} (t{cells[(opt, batch)].best})", fontsize=9)
            ax.legend(fontsize=7)
        else:
            ax.set_title(opt, fontsize=9)
            ax.text(0.5, 0.5, "no finals yet", transform=ax.transAxes, ha="center", fontsize=8, color="0.4")
        ax.set_xlabel("optimizer step")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("training batch loss (nats)")
    fig.suptitle(f"Batch {batch}: training loss of the finals ({protocol.name}, {protocol.epochs} epochs)",
                 fontsize=10)
    return _save(fig, out, f"finals_loss_b{batch}")


def write_report(protocol: Protocol, output: Path) -> list[Path]:
    """Write output/summary.md and the finals, finals-loss and best-so-far figures (PNG, SVG)
    of each batch size; return the paths."""
    cells = states(protocol, output)
    figures = {batch: [path for plot in (plot_finals, plot_finals_loss, plot_best_so_far)
                       for path in plot(protocol, cells, batch, output)]
               for batch in protocol.batch_sizes}
    summary = write_text_atomically(output / "summary.md", summary_markdown(
        protocol, cells, read_results(output / "results.csv", complete=True), figures))
    return [path for batch in sorted(figures, reverse=True) for path in figures[batch]] + [summary]
