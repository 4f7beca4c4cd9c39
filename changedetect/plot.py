"""Matplotlib figures for analysts, drawn from a results folder alone.

Every figure reads the evidence store that the run wrote (``evidence/`` in
the ``--out`` folder, :mod:`changedetect.evidence`): the chips are the
*co-registered* scenes, on the grid the polygons are on, in true colour from
the band roles. The input images are not needed, and nothing is registered
again.

* :func:`plot_before_after` — one change: the last acquisition without it
  beside the first with it;
* :func:`plot_timeline` — one change on every acquisition, the bracket
  highlighted and the dates its dating did not use marked;
* :func:`plot_overview` — the site with every change, coloured by kind,
  labelled without overlaps;
* :func:`plot_registration` — tie-point shifts and residuals per scene;
* :func:`animate_series` — a GIF, one frame per acquisition, the polygons
  appearing on their ``first_present`` date.

Each takes the results folder (or :func:`changedetect.evidence.load_results`'s
:class:`~changedetect.evidence.Results`), draws into ``ax=`` / ``fig=`` when
given, and returns it. Chips have a scale bar in metres and a north arrow
(grid north; none on images without georeferencing) instead of projected
coordinates.

Migration: ``plot_before_after(images, changes, change_id)`` (the input files
and a change table) still works but draws the files as they are, *not*
co-registered, and warns; use ``plot_before_after(results_folder, change_id)``.
:func:`show_scene` draws one input file (true colour from its band roles).

matplotlib is imported only when a function here is called (``pip install
'changedetect[plot]'``).
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from .evidence import Results, load_results

__all__ = ["plot_before_after", "plot_timeline", "plot_overview", "plot_registration", "animate_series",
           "show_scene", "KIND_COLOURS", "scale_length", "label_box"]

#: Outline colour of each kind of change.
KIND_COLOURS = {"new": "#ff3b30", "modified": "#ff9500", "demolished": "#ffd60a"}
_OTHER = "#00e5ff"


def _plt():
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("changedetect.plot needs matplotlib: pip install 'changedetect[plot]'") from None
    return plt


def _results(results) -> Results:
    return results if isinstance(results, Results) else load_results(results)


def scale_length(width_m: float) -> float:
    """A round length (1, 2 or 5 times a power of ten) no longer than a quarter of ``width_m``.

    Examples
    --------
    >>> scale_length(100), scale_length(37), scale_length(4000)
    (20.0, 5.0, 1000.0)
    """
    target = max(width_m / 4, 1e-9)
    p = 10 ** math.floor(math.log10(target))
    return float(max(m * p for m in (1, 2, 5) if m * p <= target))


def _label_length(metres: float) -> str:
    return f"{metres / 1000:g} km" if metres >= 1000 else f"{metres:g} m"


def _georeferenced(res: Results) -> bool:
    return bool(res.run.get("grid", {}).get("georeferenced", True))


def _decorate(ax, width_m: float, height_m: float, *, north: bool = True) -> None:
    """Scale bar (lower left) and north arrow (upper right) on axes in metres from the lower-left corner."""
    from matplotlib.patches import Rectangle

    length = scale_length(width_m)
    x0, y0 = 0.05 * width_m, 0.05 * height_m
    bar_h = 0.015 * height_m
    ax.add_patch(Rectangle((x0, y0), length, bar_h, facecolor="white", edgecolor="black", lw=0.8,
                           zorder=5, gid="scalebar"))
    ax.text(x0 + length / 2, y0 + bar_h * 1.6, _label_length(length), ha="center", va="bottom",
            fontsize=8, color="white", zorder=6, gid="scalebar-label",
            bbox=dict(boxstyle="round,pad=0.15", fc="black", ec="none", alpha=0.5))
    if north:
        xa, ya = 0.92 * width_m, 0.80 * height_m
        ax.annotate("N", xy=(xa, ya + 0.12 * height_m), xytext=(xa, ya), ha="center", va="top",
                    fontsize=9, color="white", fontweight="bold", zorder=6, gid="north-arrow",
                    arrowprops=dict(arrowstyle="-|>", color="white", lw=1.5),
                    bbox=dict(boxstyle="round,pad=0.15", fc="black", ec="none", alpha=0.5))
    ax.set_xticks([])
    ax.set_yticks([])


def _local(chip, geom):
    """Rings of ``geom`` in metres from the chip's lower-left corner."""
    left, _, bottom, _ = chip.extent
    rings = []
    for part in getattr(geom, "geoms", [geom]):
        for ring in [part.exterior, *part.interiors]:
            x, y = np.asarray(ring.xy)
            rings.append((x - left, y - bottom))
    return rings


def _show_chip(ax, chip, t: int, geom=None, *, colour="cyan", ls="-", lw=1.8, north=True, dim=False):
    left, right, bottom, top = chip.extent
    w, h = right - left, top - bottom
    img = chip.rgb[t].astype(np.float32) / 255.0
    img = np.concatenate([img, chip.valid[t][..., None].astype(np.float32)], axis=2)
    if dim:
        img[..., :3] *= 0.45
    ax.set_facecolor("#202020")
    ax.imshow(img, extent=(0, w, 0, h), interpolation="nearest", origin="upper")
    if geom is not None:
        for x, y in _local(chip, geom):
            ax.plot(x, y, color=colour, lw=lw, ls=ls)
    ax.set_xlim(0, w)
    ax.set_ylim(0, h)
    ax.set_aspect("equal")
    _decorate(ax, w, h, north=north)


def _date_index(dates: Sequence[str], date: str, *, last: bool) -> int:
    hits = [i for i, d in enumerate(dates) if d == date]
    if not hits:
        raise ValueError(f"Date {date} is not one of the acquisitions ({', '.join(dates)}).")
    return hits[-1] if last else hits[0]


def plot_before_after(results, change_id, *args, fig=None, **kwargs):
    """One change: the last acquisition without it beside the first with it, co-registered.

    Parameters
    ----------
    results : path-like or Results
        The ``--out`` folder of a run (or :func:`changedetect.evidence.load_results`).
    change_id : str
        Which change (``chg-0001``...).
    fig : matplotlib Figure, optional
        Drawn into (two axes are added); a new one by default.

    Returns
    -------
    matplotlib Figure
        Titles hold the two dates and their sensors (the file's sensor tag,
        else its name); each panel has a scale bar and a north arrow.
    """
    if not isinstance(change_id, str):               # the old call: (images, changes, change_id)
        return _legacy_before_after(results, change_id, *args, **kwargs)
    plt = _plt()
    res = _results(results)
    row = res.change(change_id)
    chip = res.chip(change_id)
    before = _date_index(chip.dates, row.last_absent, last=True)
    after = _date_index(chip.dates, row.first_present, last=False)
    if fig is None:
        fig = plt.figure(figsize=(11, 5.8))
    axes = fig.subplots(1, 2)
    colour = KIND_COLOURS.get(row.kind, _OTHER)
    north = _georeferenced(res)
    for ax, t, what in ((axes[0], before, "last absent"), (axes[1], after, "first present")):
        _show_chip(ax, chip, t, row.geometry, colour=colour, north=north)
        ax.set_title(f"{what}: {chip.dates[t]}\n{res.sensor(t)}", fontsize=10)
    fig.suptitle(f"{change_id} ({row.kind}): between {row.last_absent} and {row.first_present}, "
                 f"confidence {row.confidence:.2f}, {row.area_m2:.0f} m²", fontsize=11)
    # keep the top 0.6 inch for the suptitle: tight_layout alone lays the panel titles under it
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.6 / fig.get_figheight()))
    return fig


def plot_timeline(results, change_id: str, *, fig=None, ncols: int | None = None):
    """One change on every acquisition: the bracket highlighted, unusable dates marked.

    The ``last_absent`` panel is framed in blue, ``first_present`` in the
    change's colour; a date the dating did not use (cloud, nodata, left out)
    is dimmed and titled "not used". The outline is dashed before
    ``first_present``, solid from it.

    Returns
    -------
    matplotlib Figure
    """
    plt = _plt()
    res = _results(results)
    row = res.change(change_id)
    chip = res.chip(change_id)
    n = len(chip.dates)
    before = _date_index(chip.dates, row.last_absent, last=True)
    after = _date_index(chip.dates, row.first_present, last=False)
    ncols = ncols or min(n, 8)
    nrows = -(-n // ncols)
    if fig is None:
        fig = plt.figure(figsize=(2.2 * ncols, 2.5 * nrows + 0.6))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    colour = KIND_COLOURS.get(row.kind, _OTHER)
    for t, ax in enumerate(axes):
        if t >= n:
            ax.set_axis_off()
            continue
        used = bool(chip.usable[t])
        _show_chip(ax, chip, t, row.geometry, colour=colour if t >= after else "white",
                   ls="-" if t >= after else "--", lw=1.2, north=t == 0 and _georeferenced(res), dim=not used)
        label = chip.dates[t] + ("" if used else "\nnot used")
        if t == before:
            label += "\nlast absent"
        elif t == after:
            label += "\nfirst present"
        ax.set_title(label, fontsize=8, color="black" if used else "grey")
        frame = "#1e88e5" if t == before else colour if t == after else None
        for spine in ax.spines.values():
            spine.set_visible(frame is not None)
            if frame is not None:
                spine.set_edgecolor(frame)
                spine.set_linewidth(3)
        if not used:
            ax.text(0.5, 0.5, "not used", transform=ax.transAxes, ha="center", va="center", color="white",
                    fontsize=9, rotation=30, alpha=0.8)
    fig.suptitle(f"{change_id} ({row.kind}): every acquisition; between {row.last_absent} and "
                 f"{row.first_present}", fontsize=10)
    fig.tight_layout()
    return fig


def _overlaps(a, b, pad: float = 1.0) -> bool:
    return not (a.x1 + pad <= b.x0 or b.x1 + pad <= a.x0 or a.y1 + pad <= b.y0 or b.y1 + pad <= a.y0)


def label_box(ann, renderer, pad: float = 3.0):
    """Display box of a label's text (without its leader line), grown by ``pad`` pixels."""
    from matplotlib.text import Text

    ann.update_positions(renderer)                    # the text's place is only computed at draw time
    return Text.get_window_extent(ann, renderer).padded(pad)


def _place_labels(ax, points, texts, colours, *, obstacles=(), fontsize=7):
    """Greedy, deterministic label placement: each label at the first free spot on rings around its point.

    Candidates are 8 directions at growing distances (in points), in order; a
    spot is free when the label's box overlaps no label placed before it and
    stays in the axes. A spot that also keeps off every ``obstacles`` box
    (display boxes of the outlines) is preferred. Returns the annotations.
    """
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    axbox = ax.get_window_extent(renderer)
    placed, out = [], []
    dirs = [(1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1)]
    spots = [(d * dx / math.hypot(dx, dy), d * dy / math.hypot(dx, dy)) for d in range(14, 400, 8)
             for dx, dy in dirs]
    for (x, y), text, colour in zip(points, texts, colours):
        ann = ax.annotate(text, (x, y), xytext=(14, 14), textcoords="offset points", fontsize=fontsize,
                          color="white", ha="center", va="center", zorder=7,
                          bbox=dict(boxstyle="round,pad=0.2", fc="black", ec=colour, lw=0.8, alpha=0.75),
                          arrowprops=dict(arrowstyle="-", color=colour, lw=0.7, shrinkA=0, shrinkB=0))
        chosen = None
        for strict in (True, False):
            for spot in spots:
                ann.set_position(spot)
                box = label_box(ann, renderer)
                inside = (box.x0 >= axbox.x0 and box.x1 <= axbox.x1 and box.y0 >= axbox.y0
                          and box.y1 <= axbox.y1)
                if inside and not any(_overlaps(box, p) for p in placed) and not (
                        strict and any(_overlaps(box, o, pad=0) for o in obstacles)):
                    chosen = box
                    break
            if chosen is not None:
                break
        if chosen is None:                       # no free spot in the axes: the last one tried
            chosen = label_box(ann, renderer)
        placed.append(chosen)
        out.append(ann)
    return out


def plot_overview(results, *, ax=None, date: str = "last", labels: bool = True):
    """The site with every change outlined, coloured by kind, with non-overlapping labels and a legend.

    Parameters
    ----------
    results : path-like or Results
    ax : matplotlib Axes, optional
    date : ``"last"`` or ``"first"``
        The last (default) or first usable acquisition as background.
    labels : bool
        Label each change with its id and first date.

    Returns
    -------
    matplotlib Axes
        ``ax.texts`` holds the labels (gid ``change-label``).

    Notes
    -----
    Labels are placed for the axes' size when called (offsets in points):
    set the figure's size and layout first; a later ``tight_layout`` that
    resizes the axes can make them touch.
    """
    plt = _plt()
    from matplotlib.lines import Line2D

    res = _results(results)
    ov = res.overview()
    t = 0 if date == "first" else len(ov.dates) - 1
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 9))
    _show_chip(ax, ov, t, north=_georeferenced(res))
    left, _, bottom, _ = ov.extent
    points, texts, colours = [], [], []
    kinds, obstacles = [], []
    for _, row in res.changes.iterrows():
        colour = KIND_COLOURS.get(row.kind, _OTHER)
        for x, y in _local(ov, row.geometry):
            line, = ax.plot(x, y, color=colour, lw=1.2)
        obstacles.append(line)
        c = row.geometry.representative_point()
        points.append((c.x - left, c.y - bottom))
        texts.append(f"{row.change_id.replace('chg-', '')} {row.first_present[:7]}")
        colours.append(colour)
        kinds.append(row.kind)
    handles = [Line2D([], [], color=KIND_COLOURS.get(k, _OTHER), lw=2, label=f"{k} ({kinds.count(k)})")
               for k in sorted(set(kinds), key=lambda k: (list(KIND_COLOURS).index(k) if k in KIND_COLOURS
                                                           else 99, str(k)))]
    legend = ax.legend(handles=handles, loc="upper left", fontsize=8, framealpha=0.8) if handles else None
    if labels:
        renderer = ax.figure.canvas.get_renderer()
        marks = [a for a in ax.get_children() if a.get_gid() in ("scalebar", "scalebar-label", "north-arrow")]
        boxes = [o.get_window_extent(renderer).padded(2) for o in obstacles + marks]
        boxes += [m.arrow_patch.get_window_extent(renderer).padded(2) for m in marks
                  if getattr(m, "arrow_patch", None) is not None]
        if legend is not None:
            boxes.append(legend.get_window_extent(renderer))
        for a in _place_labels(ax, points, texts, colours, obstacles=boxes):
            a.set_gid("change-label")
    ax.set_title(f"{len(res.changes)} changes on {ov.dates[t]}"
                 + (f" ({res.sensor(ov.scene_index[t])})" if ov.scene_index else "")
                 + "\nlabels: change number, first date present", fontsize=10)
    return ax


def plot_registration(results, *, fig=None, exaggeration: float | None = None):
    """Registration quality: every scene's tie-point shifts (exaggerated) and the residuals about its model.

    Top: one panel per registered scene over the grid, each tie point's
    measured shift as an arrow (inliers blue, rejected red) scaled by
    ``exaggeration`` (stated in the title; by default one factor for all
    panels, so the longest arrow is a tenth of the grid). Bottom: the residual
    of every tie point about the fitted model, per scene, with its RMSE.

    Returns
    -------
    matplotlib Figure
    """
    plt = _plt()
    res = _results(results)
    recs = res.registration()
    shown = [r for r in recs if r["model"] != "identity"]
    grid = res.index["grid"]
    W, H = grid["width"], grid["height"]
    n = max(1, len(shown))
    ncols = min(n, 4)
    nrows = -(-n // ncols)
    if fig is None:
        fig = plt.figure(figsize=(3.2 * ncols, 3.2 * nrows + 3.2))
    gs = fig.add_gridspec(nrows + 1, ncols, height_ratios=[3] * nrows + [2.4])

    def arr(rec):
        cols = rec["tiepoints"]["columns"]
        rows = rec["tiepoints"]["rows"]
        a = np.array([[np.nan if v is None else float(v) for v in r] for r in rows], dtype=float).reshape(
            -1, len(cols))
        return {c: a[:, i] for i, c in enumerate(cols)}

    data = [arr(r) for r in shown]
    longest = max([float(np.nanmax(np.hypot(d["measured_dx"], d["measured_dy"])))
                   for d in data if len(d["col"]) and np.isfinite(d["measured_dx"]).any()] or [1.0])
    k = exaggeration or max(1.0, float(f"{0.1 * max(W, H) / max(longest, 1e-6):.1g}"))
    for i, (rec, d) in enumerate(zip(shown, data)):
        ax = fig.add_subplot(gs[i // ncols, i % ncols])
        ax.set_xlim(0, W)
        ax.set_ylim(H, 0)
        ax.set_aspect("equal")
        if len(d["col"]):
            inl = d["inlier"] > 0.5
            for mask, colour, lab in ((inl, "#1e88e5", "inlier"), (~inl, "#e53935", "rejected")):
                ok = mask & np.isfinite(d["measured_dx"])
                ax.quiver(d["col"][ok], d["row"][ok], k * d["measured_dx"][ok], k * d["measured_dy"][ok],
                          angles="xy", scale_units="xy", scale=1, color=colour, width=0.006, label=lab)
                bad = mask & ~np.isfinite(d["measured_dx"])
                ax.plot(d["col"][bad], d["row"][bad], "x", color=colour, ms=4)
        flag = " FLAGGED" if rec["flagged"] else ""
        rm = rec["rmse_px"]
        ax.set_title(f"{rec['date']} {rec['model']}{flag}\nshift {rec['shift_px'][0]:+.2f}, "
                     f"{rec['shift_px'][1]:+.2f} px" if rec["shift_px"][0] is not None else
                     f"{rec['date']} {rec['model']}{flag}", fontsize=8)
        ax.tick_params(labelsize=6)
        if rm is not None:
            ax.text(0.02, 0.02, f"rmse {rm:.3f} px", transform=ax.transAxes, fontsize=7)
    ax = fig.add_subplot(gs[nrows, :])
    for i, d in enumerate(data):
        if not len(d["col"]):
            continue
        r = np.hypot(d["dx"], d["dy"])
        inl = d["inlier"] > 0.5
        jitter = (np.arange(len(r)) % 7 - 3) * 0.04
        ax.plot(i + jitter[inl], r[inl], ".", color="#1e88e5", ms=3)
        ax.plot(i + jitter[~inl], r[~inl], ".", color="#e53935", ms=3)
        if shown[i]["rmse_px"] is not None:
            ax.plot([i - 0.3, i + 0.3], [shown[i]["rmse_px"]] * 2, color="black", lw=1.5)
    ax.set_xticks(range(len(shown)))
    ax.set_xticklabels([r["date"] for r in shown], rotation=30, fontsize=7, ha="right")
    ax.set_ylabel("residual about the model (px)", fontsize=8)
    finite = [np.hypot(d["dx"], d["dy"])[d["inlier"] > 0.5] for d in data if len(d["col"])]
    finite = np.concatenate(finite) if finite else np.zeros(0)
    finite = finite[np.isfinite(finite)]
    if finite.size:
        ax.set_ylim(0, 1.6 * float(finite.max()))     # rejected tie points beyond it are off the scale
    ax.set_title("tie-point residuals (blue inlier, red rejected; bar: RMSE of the inliers)", fontsize=9)
    fig.suptitle(f"Co-registration: measured tie-point shifts, arrows ×{k:g} (grid pixels of "
                 f"{grid['pixel_size']:g} m)", fontsize=10)
    fig.tight_layout()
    return fig


def _gif_frame(im):
    """A palette image of ``im``: 248 median-cut colours plus the kinds' colours, white and black, undithered."""
    from PIL import Image

    base = im.quantize(colors=248, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    pal = list(base.getpalette()[:248 * 3])
    pal += [0] * (248 * 3 - len(pal))
    for c in [*KIND_COLOURS.values(), _OTHER, "#ffffff", "#000000"]:
        pal += [int(c[i:i + 2], 16) for i in (1, 3, 5)]
    pal += [0] * (768 - len(pal))
    ref = Image.new("P", (1, 1))
    ref.putpalette(pal)
    return im.quantize(palette=ref, dither=Image.Dither.NONE)


def animate_series(results, path: str | os.PathLike, *, change_id: str | None = None, fps: float = 1.0,
                   dpi: int = 100):
    """An animated GIF of the series: one frame per acquisition, polygons appearing on their first date.

    Without ``change_id``, the whole site (``evidence/series.npz``) with every
    change; with it, that change's chip. Dates the run left out are dimmed.
    The frames hold no time stamps: the same results give the same file.

    Returns
    -------
    pathlib.Path
        The GIF.
    """
    plt = _plt()
    from PIL import Image

    res = _results(results)
    path = Path(path)
    if change_id is None:
        img, rows = res.series(), list(res.changes.iterrows())
    else:
        img, rows = res.chip(change_id), [(0, res.change(change_id))]
    n = len(img.dates)
    usable = getattr(img, "usable", None)
    frames = []
    left, right, bottom, top = img.extent
    aspect = (top - bottom) / (right - left)
    for t in range(n):
        fig = plt.figure(figsize=(6, 6 * aspect + 0.4), dpi=dpi)
        ax = fig.add_axes([0.01, 0.01, 0.98, (6 * aspect - 0.02) / (6 * aspect + 0.4)])
        dim = usable is not None and not bool(np.asarray(usable)[t])
        _show_chip(ax, img, t, north=_georeferenced(res), dim=dim)
        for _, row in rows:
            if row.first_present <= img.dates[t]:
                colour = KIND_COLOURS.get(row.kind, _OTHER)
                for x, y in _local(img, row.geometry):
                    ax.plot(x, y, color=colour, lw=1.5)
        shown = sum(1 for _, r in rows if r.first_present <= img.dates[t])
        fig.text(0.5, 0.985, f"{img.dates[t]}  ({t + 1}/{n})  {shown} change{'s' if shown != 1 else ''}"
                 + ("  not used" if dim else ""), ha="center", va="top", fontsize=11)
        fig.canvas.draw()
        frame = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
        plt.close(fig)
        frames.append(_gif_frame(Image.fromarray(frame)))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=int(1000 / fps),
                   loop=0, optimize=False)
    os.replace(tmp, path)
    return path


# ------------------------------------------------------------------------- drawing input files

def _file_bands(src, bands):
    if bands is not None:
        return list(bands)
    from .evidence import true_colour_bands
    from .io import band_roles

    roles, _ = band_roles(src)
    idx, _ = true_colour_bands(roles)
    return [i + 1 for i in idx]


def _rgb(path, bands: Sequence[int] | None = None, *, percentiles=(1, 99)):
    import rasterio

    with rasterio.open(path) as src:
        arr = src.read(_file_bands(src, bands), masked=True).astype("float32")
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
    """Show one input file as it is (true colour from its band roles) with change polygons over it.

    The file is *not* co-registered: on a misregistered scene the outlines sit
    off the buildings by the misregistration. For evidence, draw the
    co-registered chips with :func:`plot_before_after` or :func:`plot_overview`.

    Parameters
    ----------
    path : path-like
        A scene.
    changes : GeoDataFrame, optional
        The change table; reprojected to the scene's CRS. Colours: new red,
        modified orange, demolished yellow.
    ax : matplotlib Axes, optional
    bands : sequence of int, optional
        1-based band indices for red, green, blue (default: from the band
        descriptions or colour interpretation, as the run reads them).
    title : str, optional
    label : bool
        Write each change's id and date bracket beside it.

    Returns
    -------
    matplotlib Axes
    """
    plt = _plt()

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 7))
    img, extent, crs = _rgb(path, bands)
    ax.imshow(img, extent=extent, interpolation="nearest")
    if changes is not None and len(changes):
        g = changes.to_crs(crs) if changes.crs is not None and crs is not None else changes
        for _, row in g.iterrows():
            colour = KIND_COLOURS.get(row.get("kind"), _OTHER)
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


def _legacy_before_after(images, changes, change_id, *, dates=None, pad: float = 20.0):
    """The pre-evidence call ``plot_before_after(images, changes, change_id)``: the raw files."""
    plt = _plt()
    from .io import read_scene

    warnings.warn("plot_before_after(images, changes, change_id) draws the input files without their "
                  "co-registration, so outlines can sit off the buildings; use "
                  "plot_before_after(results_folder, change_id), which draws the co-registered evidence.",
                  FutureWarning, stacklevel=3)
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
    for ax, key, what in ((axes[0], str(row.last_absent)[:10], "last absent"),
                          (axes[1], str(row.first_present)[:10], "first present")):
        show_scene(by_date[key], one, ax=ax, title=f"{what}: {key}", label=False)
        ax.set_xlim(x0 - pad, x1 + pad)
        ax.set_ylim(y0 - pad, y1 + pad)
    fig.suptitle(f"{change_id} ({row.kind}), confidence {row.confidence:.2f}, "
                 f"{row.area_m2:.0f} m²")
    fig.tight_layout()
    return fig
