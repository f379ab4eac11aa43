"""Server-side PNG charts (matplotlib's object API: no pyplot global state, safe in threaded servers)."""

import io
from collections.abc import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.axes import Axes
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


NO_DATA = "no data yet"
KL_CLIPPED_NOTE = "estimates below 0 shown as 0"


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return buffer.getvalue()


def _style(ax: Axes, *, title: str, xlabel: str) -> None:
    """Whole-number x ticks (steps, rounds) and plain y values: no offset like "+6.931e-1" above the axis."""
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel, fontsize=8)
    # min_n_ticks=1: with fewer than two whole numbers in view (one round) MaxNLocator would fall back to 0.1 steps.
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.tick_params(labelsize=8)


def _no_data(ax: Axes) -> None:
    """An axis with nothing to plot yet (a round still training) says so instead of drawing empty axes."""
    ax.text(0.5, 0.5, NO_DATA, ha="center", va="center", transform=ax.transAxes, color="#6b7280", fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])


def kl_shown(value: float | None) -> float | None:
    """KL is never negative; its Monte-Carlo estimate can be on a few samples: shown clipped at 0."""
    return None if value is None else max(0.0, value)


def round_curves_figure(metrics: Sequence[RoundMetric]) -> Figure:
    figure = Figure(figsize=(11, 5.5), layout="constrained")
    axes = figure.subplots(2, 3)
    for ax, (title, keys) in zip(axes.flat, CURVES):
        plotted = False
        for key in keys:
            points = [(m.step, m.values[key]) for m in metrics if key in m.values]
            if points:
                plotted = True
                ax.plot(*zip(*points), marker="." if len(points) < 30 else None, label=key.split("/")[-1])
        _style(ax, title=title, xlabel="step")
        if not plotted:
            _no_data(ax)
        elif len(keys) > 1:
            ax.legend(fontsize=8)
    return figure


def round_curves_png(metrics: Sequence[RoundMetric]) -> bytes:
    return _png(round_curves_figure(metrics))


def campaign_rounds_figure(rounds: Sequence[TrainingRound]) -> Figure:
    figure = Figure(figsize=(11, 5.5), layout="constrained")
    axes = figure.subplots(2, 2)
    evaluated = [r for r in sorted(rounds, key=lambda r: r.number) if r.eval_results]
    last = max((r.number for r in evaluated), default=1)
    for ax, (title, key) in zip(axes.flat, ACROSS_ROUNDS):
        points = [(r.number, r.eval_results[key], r.status) for r in evaluated if r.eval_results.get(key) is not None]
        if key == "kl" and any(p[1] < 0 for p in points):
            points = [(n, kl_shown(v), status) for n, v, status in points]
            title = f"{title}; {KL_CLIPPED_NOTE}"
        _style(ax, title=title, xlabel="round")
        if not points:
            _no_data(ax)
            continue
        ax.plot([p[0] for p in points], [p[1] for p in points], color="#9aa5b1", zorder=1)
        for promoted, color, label in ((True, "#1a7f37", "promoted"), (False, "#c62828", "not promoted")):
            chosen = [p for p in points if (p[2] == RoundStatus.PROMOTED) == promoted]
            if chosen:
                ax.scatter([p[0] for p in chosen], [p[1] for p in chosen], color=color, label=label, zorder=2)
        ax.legend(fontsize=8)
        ax.set_xlim(0.5, last + 0.5)
        if key == "kl":
            ax.set_ylim(bottom=0)
    return figure


def campaign_rounds_png(rounds: Sequence[TrainingRound]) -> bytes:
    return _png(campaign_rounds_figure(rounds))
