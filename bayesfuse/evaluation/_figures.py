"""Figure geometry of the evaluation report, shared by its sections (report.py, survival_report.py)."""

from __future__ import annotations

__all__ = ["FIGSIZE", "DPI", "new_axes"]

#: Size (inches) and resolution of every report figure: PNGs are ``FIGSIZE * DPI`` pixels (500 x 400).
FIGSIZE: tuple[float, float] = (5.0, 4.0)
DPI: int = 100


def new_axes():
    """A new (figure, axes) pair of the report's size, constrained layout."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    return fig, ax
