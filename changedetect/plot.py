"""Matplotlib figures for analysts: before/after views with the change polygons.

matplotlib is imported only when a function here is called (``pip install
changedetect[plot]``).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

__all__ = ["show_scene", "plot_before_after"]

_KIND_COLOURS = {"new": "#ff3b30", "modified": "#ff9500", "demolished": "#ffd60a"}


def _rgb(path, bands: Sequence[int] | None = None, *, percentiles=(1, 99)):
    import rasterio

    with rasterio.open(path) as src:
        if bands is None:
            bands = (3, 2, 1) if src.count >= 3 else (1, 1, 1)
        arr = src.read(list(bands), masked=True).astype("float32")
        extent = (src.bounds.left, src.bounds.right, src.bounds.bottom, src.bounds.top)
        crs = src.crs
    valid = ~np.ma.getmaskarray(arr).any(axis=0)
    data = arr.filled(0)
    if valid.any():
        lo, hi = np.percentile(data[:, valid], percentiles)
    else:
        lo, hi = 0.0, 1.0
    img = np.clip((data - lo) / max(hi - lo, 1e-9), 0, 1).transpose(1, 2, 0)
    img = np.concatenate([img, valid[..., None].astype("float32")], axis=2)
    return img, extent, crs


def show_scene(path: str | os.PathLike, changes=None, *, ax=None, bands=None, title: str | None = None,
               label: bool = True):
    """Show one scene (true colour by default) with change polygons drawn over it.

    Parameters
    ----------
    path : path-like
        A scene.
    changes : GeoDataFrame, optional
        Output of :func:`changedetect.pipeline.detect_changes`; reprojected to
        the scene's CRS. Colours: new red, modified orange, demolished yellow.
    ax : matplotlib Axes, optional
    bands : sequence of int, optional
        1-based band indices for red, green, blue (default 3, 2, 1).
    title : str, optional
    label : bool
        Write each change's id and date bracket beside it.

    Returns
    -------
    matplotlib Axes
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 7))
    img, extent, crs = _rgb(path, bands)
    ax.imshow(img, extent=extent, interpolation="nearest")
    if changes is not None and len(changes):
        g = changes.to_crs(crs) if changes.crs is not None and crs is not None else changes
        for _, row in g.iterrows():
            colour = _KIND_COLOURS.get(row.get("kind"), "cyan")
            for part in getattr(row.geometry, "geoms", [row.geometry]):
                x, y = part.exterior.xy
                ax.plot(x, y, color=colour, lw=1.5)
            if label:
                x0, y0 = row.geometry.bounds[0], row.geometry.bounds[3]
                ax.annotate(f"{row.change_id}\n{row.last_absent}..{row.first_present}", (x0, y0),
                            color=colour, fontsize=7, va="bottom")
    ax.set_title(title or os.path.basename(str(path)))
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    return ax


def plot_before_after(images: Sequence[str | os.PathLike], changes, change_id: str, *,
                      dates: Sequence | None = None, pad: float = 20.0):
    """Zoom on one change: the last acquisition without it beside the first with it.

    Parameters
    ----------
    images : sequence of path-like
        The inputs of the run (any order).
    changes : GeoDataFrame
        The change table.
    change_id : str
        Which change to show.
    dates : sequence of datetime.date, optional
        Dates of ``images``; read from the files when omitted.
    pad : float
        Margin around the polygon, in CRS units.

    Returns
    -------
    matplotlib Figure
    """
    import matplotlib.pyplot as plt

    from .io import read_scene

    row = changes.loc[changes["change_id"] == change_id]
    if row.empty:
        raise KeyError(f"No change {change_id!r}; the table has {', '.join(changes['change_id'])}.")
    row = row.iloc[0]
    if dates is None:
        dates = [read_scene(p).date for p in images]
    by_date = {d.isoformat(): p for d, p in zip(dates, images)}
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.5))
    x0, y0, x1, y1 = row.geometry.bounds
    one = changes.loc[changes["change_id"] == change_id]
    for ax, key, what in ((axes[0], row.last_absent, "last absent"),
                          (axes[1], row.first_present, "first present")):
        show_scene(by_date[key], one, ax=ax, title=f"{what}: {key}", label=False)
        ax.set_xlim(x0 - pad, x1 + pad)
        ax.set_ylim(y0 - pad, y1 + pad)
    fig.suptitle(f"{change_id} ({row.kind}), confidence {row.confidence:.2f}, "
                 f"{row.area_m2:.0f} m²")
    fig.tight_layout()
    return fig
