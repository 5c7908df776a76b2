"""The STARD-style flow diagram: candidates -> quarantined -> excluded -> included -> scored, one column per split.

Every count is read from the split's flow.json (images, the unit the manifest holds) and, for what evaluate
scored, from metrics.json (`<split>.n`, `<split>.n_unscored`) and the primary endpoint's image count.
"""

from __future__ import annotations

from typing import Any

from fracture.contracts.schema import copy_exclusion_reason
from fracture.report.figures import _pyplot, png_base64

SPLIT_ORDER = ("train", "val", "test")
BOX = {"boxstyle": "round,pad=0.45", "facecolor": "#eef2f7", "edgecolor": "#5b6577", "linewidth": 1}
SIDE = {"boxstyle": "round,pad=0.45", "facecolor": "#fff6df", "edgecolor": "#c9a54a", "linewidth": 1}


def reason_lines(by_reason: dict[str, int], limit: int = 6) -> list[str]:
    """`reason: n` lines, largest first; the tail beyond `limit` folded into one line."""
    items = sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0]))
    lines = [f"{reason}: {n}" for reason, n in items[:limit]]
    if len(items) > limit:
        lines.append(f"{len(items) - limit} other reasons: {sum(n for _, n in items[limit:])}")
    return lines


def general_exclusions(flow: dict) -> dict[str, int]:
    """Split-level exclusions not charged to one split (cohort policy, source outside the strategy, ...)."""
    total = dict(flow.get("total", {}).get("excluded_by_reason", {}))
    for name in SPLIT_ORDER:
        for reason, n in flow.get("splits", {}).get(name, {}).get("excluded_by_reason", {}).items():
            if reason == copy_exclusion_reason(name) and reason in total:
                total[reason] -= n
    return {reason: n for reason, n in total.items() if n > 0}


def split_boxes(name: str, entry: dict, metrics: dict, primary_n: Any) -> list[tuple[str, dict]]:
    """The boxes of one split's column, top to bottom: assigned, excluded from it, included, scored."""
    excluded = "\n".join(
        [f"excluded n = {entry.get('excluded', 0)}", *reason_lines(entry.get("excluded_by_reason", {}))]
    )
    included = (
        f"included n = {entry.get('included')}\n{entry.get('patients')} patients, {entry.get('positives')} fractures"
    )
    if not entry.get("scored"):
        scored = "not scored\n(model fitted on it)"
    else:
        scored = f"scored n = {metrics.get(f'{name}.n', 'n/a')}\nnot decodable: {metrics.get(f'{name}.n_unscored', 0)}"
        if name == "test" and primary_n is not None:
            scored += f"\nprimary population: {primary_n}"
    return [
        (f"{name}\nassigned n = {entry.get('assigned')}", BOX),
        (excluded, SIDE),
        (included, BOX),
        (scored, BOX),
    ]


def _box(ax: Any, x: float, y: float, text: str, style: dict) -> Any:
    return ax.text(x, y, text, ha="center", va="center", fontsize=8.5, bbox=style)


def _link(
    ax: Any, src: Any, dst: Any, src_at: tuple = (0.5, 0.0), dst_at: tuple = (0.5, 1.0), head: str = "->"
) -> None:
    """An arrow from `src` to `dst`: text boxes (anchored at fractions of their box) or data points."""
    ax.annotate(
        "",
        xy=dst_at if not isinstance(dst, tuple) else dst,
        xycoords=dst if not isinstance(dst, tuple) else "data",
        xytext=src_at if not isinstance(src, tuple) else src,
        textcoords=src if not isinstance(src, tuple) else "data",
        arrowprops={"arrowstyle": head, "color": "#5b6577", "lw": 1.1, "shrinkA": 1, "shrinkB": 1},
    )


def _totals(ax: Any, flow: dict) -> tuple[float, float]:
    """The top of the diagram: candidates, quarantined, accepted, excluded; returns where the splits branch off."""
    total = flow.get("total", {})
    quarantined = "\n".join([f"quarantined at ingest n = {total.get('quarantined')}",
                             *reason_lines(total.get("quarantined_by_reason", {}))])  # fmt: skip
    excluded = general_exclusions(flow)
    excluded_text = "\n".join([f"excluded by the split n = {sum(excluded.values())}", *reason_lines(excluded)])
    candidates = _box(ax, 1.0, 9.6, f"candidate files n = {total.get('candidates')}", BOX)
    accepted = _box(ax, 1.0, 7.9, f"accepted into the manifest n = {total.get('accepted')}", BOX)
    junction = (1.0, 6.3)
    _link(ax, candidates, accepted)
    _link(ax, accepted, junction, head="-")
    for y, text in ((8.75, quarantined), (7.1, excluded_text)):
        _link(ax, (1.0, y), _box(ax, 2.2, y, text, SIDE), dst_at=(0.0, 0.5))
    return junction


def plot_flow(flow: dict, metrics: dict, primary_n: Any = None) -> str:
    """The flow diagram as a base64 PNG: totals on top, side boxes for what left, one column per split."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9.5, 9.0))
    ax.set(xlim=(0, 3), ylim=(0, 10))
    ax.axis("off")
    junction = _totals(ax, flow)
    ys = (5.4, 4.0, 2.6, 1.0)
    for col, name in enumerate(SPLIT_ORDER):
        entry = flow.get("splits", {}).get(name)
        if entry is None:
            continue
        previous: Any = junction
        for row, (text, style) in enumerate(split_boxes(name, entry, metrics, primary_n)):
            box = _box(ax, 0.5 + col, ys[row], text, style)
            _link(ax, previous, box)
            previous = box
    ax.set_title(f"Flow of {flow.get('unit', 'image')}s (STARD), split strategy {flow.get('strategy')}", fontsize=11)
    return png_base64(fig)
