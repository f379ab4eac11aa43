"""Server-side PNG charts (matplotlib's object API: no pyplot global state, safe in threaded servers)."""

import io
from collections.abc import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from training.models import RoundMetric, RoundStatus, TrainingRound

CURVES = [
    ("loss", ["loss"]),
    ("rewards", ["rewards/chosen", "rewards/rejected"]),
    ("reward margin", ["rewards/margins"]),
    ("reward accuracy", ["rewards/accuracies"]),
    ("log-probs", ["logps/chosen", "logps/rejected"]),
    ("learning rate", ["learning_rate"]),
]
ACROSS_ROUNDS = [
    ("held-out accuracy", "accuracy"),
    ("held-out reward margin", "margin"),
    ("sample length (tokens)", "mean_length"),
    ("KL to reference (nats)", "kl"),
]


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return buffer.getvalue()


def round_curves_png(metrics: Sequence[RoundMetric]) -> bytes:
    figure = Figure(figsize=(11, 5.5), layout="constrained")
    axes = figure.subplots(2, 3)
    for ax, (title, keys) in zip(axes.flat, CURVES):
        for key in keys:
            points = [(m.step, m.values[key]) for m in metrics if key in m.values]
            if points:
                ax.plot(*zip(*points), marker="." if len(points) < 30 else None, label=key.split("/")[-1])
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=8)
        if len(keys) > 1:
            ax.legend(fontsize=8)
    return _png(figure)


def campaign_rounds_png(rounds: Sequence[TrainingRound]) -> bytes:
    figure = Figure(figsize=(11, 5.5), layout="constrained")
    axes = figure.subplots(2, 2)
    evaluated = [r for r in sorted(rounds, key=lambda r: r.number) if r.eval_results]
    last = max((r.number for r in evaluated), default=1)
    for ax, (title, key) in zip(axes.flat, ACROSS_ROUNDS):
        points = [(r.number, r.eval_results[key], r.status) for r in evaluated if r.eval_results.get(key) is not None]
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], color="#9aa5b1", zorder=1)
            for promoted, color, label in ((True, "#1a7f37", "promoted"), (False, "#c62828", "gated out")):
                chosen = [p for p in points if (p[2] == RoundStatus.PROMOTED) == promoted]
                if chosen:
                    ax.scatter([p[0] for p in chosen], [p[1] for p in chosen], color=color, label=label, zorder=2)
            ax.legend(fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("round", fontsize=8)
        ax.set_xlim(0.5, last + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=8)
    return _png(figure)
