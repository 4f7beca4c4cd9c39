"""Figures drawn from a results folder alone (Agg): what they show and that labels do not overlap."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from changedetect import plot  # noqa: E402
from changedetect.evidence import load_results  # noqa: E402


@pytest.fixture(scope="module")
def results(site_result, tmp_path_factory):
    """The results folder alone: a copy, away from the site's images."""
    _, out = site_result
    copy = tmp_path_factory.mktemp("copy") / "results"
    shutil.copytree(out, copy)
    return copy


def _texts(fig):
    return [t.get_text() for t in fig.findobj(matplotlib.text.Text)]


def test_before_after(results):
    res = load_results(results)
    row = res.changes.iloc[0]
    fig = plot.plot_before_after(results, row.change_id)
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == 2
    i0, i1 = res.dates.index(row.last_absent), res.dates.index(row.first_present)
    assert row.last_absent in titles[0] and res.scenes[i0] in titles[0]
    assert row.first_present in titles[1] and res.scenes[i1] in titles[1]
    texts = _texts(fig)
    bars = [t for t in texts if t.endswith(" m")]
    assert len(bars) == 2 and float(bars[0].split()[0]) in (1, 2, 5, 10, 20, 50, 100)
    assert texts.count("N") == 2
    for ax in fig.axes:                         # no projected coordinates on the axes
        assert list(ax.get_xticks()) == [] and list(ax.get_yticks()) == []
        # the scale bar's length is what it says, in the axes' metres
        bar = next(p for p in ax.patches if p.get_gid() == "scalebar")
        assert bar.get_width() == float(bars[0].split()[0])
        assert ax.get_xlim()[1] == pytest.approx(res.chip(row.change_id).rgb.shape[2] * 0.5, rel=0.01)
    plt.close(fig)
    with pytest.raises(KeyError, match="chg-9999"):
        plot.plot_before_after(results, "chg-9999")


def test_timeline(results):
    res = load_results(results)
    row = res.changes.iloc[0]
    fig = plot.plot_timeline(res, row.change_id)
    shown = [ax for ax in fig.axes if ax.get_images()]
    assert len(shown) == len(res.dates)
    titles = [ax.get_title() for ax in shown]
    assert [t.split("\n")[0] for t in titles] == list(res.dates)
    assert "last absent" in titles[res.dates.index(row.last_absent)]
    assert "first present" in titles[res.dates.index(row.first_present)]
    chip = res.chip(row.change_id)
    assert sum("not used" in t for t in titles) == int((~chip.usable).sum())
    plt.close(fig)


def test_overview_labels_do_not_overlap(results):
    res = load_results(results)
    ax = plot.plot_overview(results)
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    labels = [a for a in ax.texts if a.get_gid() == "change-label"]
    assert len(labels) == len(res.changes)
    boxes = [plot.label_box(a, renderer, pad=0) for a in labels]
    axbox = ax.get_window_extent(renderer)
    for i, a in enumerate(boxes):
        assert axbox.x0 <= a.x0 and a.x1 <= axbox.x1 and axbox.y0 <= a.y0 and a.y1 <= axbox.y1
        for b in boxes[i + 1:]:
            assert not a.overlaps(b)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    for kind, n in res.changes["kind"].value_counts().items():
        assert f"{kind} ({n})" in legend
    assert any(t.endswith(" m") for t in _texts(fig))
    plt.close(fig)


def test_many_labels_do_not_overlap(results):
    """Crowded: twenty changes on a small map still get labels that do not overlap."""
    import pandas as pd

    res = load_results(results)
    many = pd.concat([res.changes] * (20 // len(res.changes) + 1)).iloc[:20].copy()
    many["change_id"] = [f"chg-{i:04d}" for i in range(1, 21)]
    res.changes = many
    fig, ax = plt.subplots(figsize=(5, 5))
    plot.plot_overview(res, ax=ax)
    renderer = fig.canvas.get_renderer()
    boxes = [plot.label_box(a, renderer, pad=0) for a in ax.texts if a.get_gid() == "change-label"]
    assert len(boxes) == 20
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    plt.close(fig)


def test_registration_figure(results):
    res = load_results(results)
    fig = plot.plot_registration(results)
    registered = [r for r in res.registration() if r["model"] != "identity"]
    panels = [ax for ax in fig.axes if ax.collections and ax.get_title()[:10] in {r["date"] for r in registered}]
    assert len(panels) == len(registered)
    assert "arrows ×" in fig._suptitle.get_text()
    plt.close(fig)


def test_gif_one_frame_per_acquisition_and_deterministic(results, tmp_path):
    from PIL import Image

    res = load_results(results)
    a = plot.animate_series(results, tmp_path / "a.gif")
    b = plot.animate_series(results, tmp_path / "b.gif")
    assert a.read_bytes() == b.read_bytes()
    with Image.open(a) as im:
        assert im.n_frames == len(res.dates)
        # the first frame shows no change, the last one every change's outline: more red there
        im.seek(0)
        first = np.asarray(im.convert("RGB")).astype(int)
        im.seek(im.n_frames - 1)
        last = np.asarray(im.convert("RGB")).astype(int)
    red = np.array([0xff, 0x3b, 0x30])
    assert (np.abs(last - red).sum(-1) < 30).sum() > (np.abs(first - red).sum(-1) < 30).sum() + 50
    c = plot.animate_series(res, tmp_path / "c.gif", change_id=res.changes.change_id.iloc[0])
    with Image.open(c) as im:
        assert im.n_frames == len(res.dates)


def test_old_call_still_works_with_a_warning(site, site_result):
    result, _ = site_result
    cid = result.changes.change_id.iloc[0]
    with pytest.warns(FutureWarning, match="co-registration"):
        fig = plot.plot_before_after(site.images, result.changes, cid)
    assert len(fig.axes) == 2
    plt.close(fig)
