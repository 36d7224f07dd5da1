"""Bar charts as inline SVG, drawn on the server: no chart library, nothing to download, and
readable without scripts (each bar has a tooltip, the chart a title and a text summary)."""

from html import escape

from markupsafe import Markup

WIDTH = 720
HEIGHT = 160
LABEL_SPACE = 18


def bar_chart(points: list[tuple[str, int]], *, title: str) -> Markup:
    """One bar per (label, value), labels under the first, middle and last bars."""
    if not points or not any(value for _, value in points):
        return Markup(f'<p class="muted">{escape(title)}: nothing sent yet.</p>')
    peak = max(value for _, value in points)
    total = sum(value for _, value in points)
    step = WIDTH / len(points)
    bar = max(step * 0.8, 1.0)
    plot = HEIGHT - LABEL_SPACE
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}: {total} in all, at most {peak} in one bar">',
        f"<title>{escape(title)}</title>",
    ]
    for index, (label, value) in enumerate(points):
        height = plot * value / peak
        x = index * step
        parts.append(
            f'<rect x="{x:.1f}" y="{plot - height:.1f}" width="{bar:.1f}" '
            f'height="{height:.1f}"><title>{escape(label)}: {value}</title></rect>'
        )
    for index in sorted({0, len(points) // 2, len(points) - 1}):
        x = index * step
        anchor = "start" if index == 0 else "end" if index == len(points) - 1 else "middle"
        parts.append(
            f'<text x="{x + (bar if anchor == "end" else 0):.1f}" y="{HEIGHT - 4}" '
            f'text-anchor="{anchor}">{escape(points[index][0])}</text>'
        )
    parts.append("</svg>")
    summary = f"{escape(title)}: {total} in all, at most {peak} in one bar."
    return Markup("".join(parts) + f'<p class="muted">{summary}</p>')
