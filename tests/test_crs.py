"""Lengths and areas on the ground whatever the inputs' CRS: the same site in UTM, EPSG:4326, EPSG:3857.

EPSG:4326 inputs stopped the run with a MemoryError (metre sizes divided by a
pixel size in degrees), and EPSG:3857 inputs reported every area 1/cos²(lat)
too large (1.45x at this site's 33.7° N). Such grids are now worked on in the
local UTM zone; the test reprojects the generated site into both CRSs and
compares with the UTM run.
"""

from __future__ import annotations

import pytest
import rasterio
from rasterio.warp import Resampling, calculate_default_transform, reproject

from changedetect.pipeline import Config, detect_changes
from changedetect.stack import ground_scale, open_stack


def _reproject_site(site, folder, epsg):
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for p in site.images:
        with rasterio.open(p) as src:
            t, w, h = calculate_default_transform(src.crs, f"EPSG:{epsg}", src.width, src.height, *src.bounds)
            profile = src.profile.copy()
            profile.update(crs=f"EPSG:{epsg}", transform=t, width=w, height=h)
            with rasterio.open(folder / p.name, "w", **profile) as dst:
                for b in range(1, src.count + 1):
                    reproject(rasterio.band(src, b), rasterio.band(dst, b), resampling=Resampling.cubic,
                              src_nodata=0, dst_nodata=0)
                dst.descriptions = src.descriptions
        out.append(folder / p.name)
    return out


@pytest.fixture(scope="module", params=[4326, 3857])
def other_crs(request, site, tmp_path_factory):
    images = _reproject_site(site, tmp_path_factory.mktemp(f"epsg{request.param}"), request.param)
    result = detect_changes(images, None, config=Config(buildings=str(site.truth_path)))
    return request.param, images, result


def test_working_grid_is_utm_with_ground_pixels(site, other_crs):
    epsg, images, result = other_crs
    stack = open_stack(images)
    assert stack.crs.to_epsg() == 32637                      # the site's UTM zone
    assert "on the ground" in stack.grid_note and f"EPSG:{epsg}" in stack.grid_note
    gx, gy = ground_scale(stack.crs, stack.transform, stack.width, stack.height)
    assert gx == pytest.approx(stack.pixel_size, rel=2e-3) and gy == pytest.approx(stack.pixel_size, rel=2e-3)
    with rasterio.open(images[0]) as src:                    # the finer ground size of an input pixel
        fx, fy = ground_scale(src.crs, src.transform, src.width, src.height)
    assert stack.pixel_size == pytest.approx(min(fx, fy), rel=1e-3)
    assert result.run["grid"]["note"] == stack.grid_note
    # a UTM input keeps its own grid
    assert open_stack(site.images).grid_note == ""


def test_areas_on_the_ground_within_one_percent(site_result, other_crs, site, tmp_path):
    """Every given footprint's area_m2 in a 4326 or 3857 run is its UTM area to 1 %."""
    epsg, _, result = other_crs
    utm = detect_changes(site.images, None, config=Config(buildings=str(site.truth_path)))
    a = utm.buildings.set_index("building_id")["area_m2"]
    b = result.buildings.set_index("building_id")["area_m2"]
    assert set(a.index) == set(b.index) and len(a) >= 5
    ratio = (b / a.loc[b.index])
    assert ratio.min() > 0.99 and ratio.max() < 1.01, ratio.describe()


def test_the_same_changes_are_found(site_result, other_crs):
    """The run completes (no MemoryError) and finds the UTM run's changes, of the same kinds."""
    epsg, _, result = other_crs
    ref = site_result[0].changes
    got = result.changes.to_crs(ref.crs)
    assert len(got) == len(ref)
    for _, c in ref.iterrows():
        ious = [c.geometry.intersection(g).area / c.geometry.union(g).area for g in got.geometry]
        best = max(range(len(ious)), key=ious.__getitem__)
        assert ious[best] > 0.5, (epsg, c.change_id, ious[best])
        assert got.iloc[best]["kind"] == c.kind
    assert got["area_m2"].sum() == pytest.approx(ref["area_m2"].sum(), rel=0.1)
