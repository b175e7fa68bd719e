"""Small server-rendered charts: an SVG polyline needs no JavaScript and no CDN."""

from django import template

register = template.Library()

WIDTH, HEIGHT = 280, 60
NOT_MEASURED = "n/a"


@register.filter
def polyline(series: list[dict], key: str) -> str:
    """SVG points for `key` over the series (rates from 0 to 1; counts scaled to their maximum)."""
    values = [row.get(key) for row in series]
    known = [value for value in values if value is not None]
    if not known:
        return ""
    top = 1.0 if max(known) <= 1.0 and key != "runs" else max(known) or 1.0
    if len(values) == 1:  # one day: a level line across the chart
        values = values * 2
    step = WIDTH / (len(values) - 1)
    return " ".join(
        f"{index * step:.1f},{HEIGHT - (value / top) * HEIGHT:.1f}"
        for index, value in enumerate(values)
        if value is not None
    )


@register.filter
def percent(value: float | None) -> str:
    return NOT_MEASURED if value is None else f"{value:.1%}"


@register.filter
def usd(value: float | None) -> str:
    return NOT_MEASURED if value is None else f"${value:.4f}"


@register.filter
def seconds(value: float | None) -> str:
    return NOT_MEASURED if value is None else f"{value:.1f} s"
