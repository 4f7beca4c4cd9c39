"""Co-registration accuracy and speed against scikit-image and AROSICS, on scenes with known misregistration.

Generated sites (``changedetect.synthetic.make_site``, 4 bands, uint16) with
shifts up to +-20 px per axis, and in the "hard" set rotations up to 0.5 deg;
each site has one scene at 0.6 m on another origin, one cloudy scene, one
nodata wedge, haze, blur, noise, seasons, new buildings and moving shadows.
For every non-reference scene, each method's reference->scene mapping is
scored against the truth as the RMSE, in reference pixels, over a 16-px grid
of the whole image:

* ours: ``changedetect.coregister.register_scene`` (``local`` = the default,
  and ``global`` = one translation);
* scikit-image ``phase_cross_correlation(upsample_factor=100)`` on the
  band-mean images (one translation), the usual baseline;
* AROSICS ``COREG`` (global) and ``COREG_LOCAL`` (tie-point grid, thin-plate
  spline), when installed (``../shared/tools/install-arosics.sh VENV``): it
  runs in its own venv through ``benchmarks/arosics_runner.py``. It matches one
  band (red, band 3); local uses a tie point every 50 px, 128-px windows.

Time is per scene pair (all reads included), in the same run. The real
Sentinel-2 pair of ``../shared/data/arosics_s2`` (no truth) is registered
by ours and by AROSICS and the two mappings are compared.

Usage::

    python benchmarks/coregistration.py [--hard 1] [--translation 2] [--size 800]
        [--arosics-python /work/.arosics-venv/bin/python] [--no-arosics]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
S2 = HERE.parents[1] / "shared" / "data" / "arosics_s2"
DEFAULT_AROSICS = Path("/work/.arosics-venv/bin/python")


def arosics(python: Path, ref: Path, tgt: Path, mode: str, **opts) -> dict:
    cmd = [str(python), str(HERE / "arosics_runner.py"), str(ref), str(tgt), "--mode", mode]
    for k, v in opts.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def points_error(points: list, true: np.ndarray) -> float:
    """RMSE (reference px) of AROSICS's reference->target points against the true affine."""
    from changedetect.stack import invert

    p = np.array([pt for pt in points if pt[2] is not None], dtype=np.float64)
    if not len(p):
        return float("nan")
    ti = invert(true)
    back = p[:, 2:] @ ti[:, :2].T + ti[:, 2]
    return float(np.sqrt(np.mean(np.sum((back - p[:, :2]) ** 2, axis=1))))


def rms(v) -> float:
    v = [x for x in v if x == x]
    return float(np.sqrt(np.mean(np.square(v)))) if v else float("nan")


def run_site(kind: str, seed: int, size: int, tmp: Path, aros: Path | None, table: dict) -> None:
    from skimage.registration import phase_cross_correlation

    from changedetect.coregister import register_scene
    from changedetect.evaluate import registration_error
    from changedetect.stack import compose, open_stack
    from changedetect.synthetic import make_site

    rot = 0.5 if kind == "hard" else 0.0
    site = make_site(tmp / f"{kind}{seed}", seed=seed, size=size, max_shift=20.0, max_rotation=rot)
    meta = json.loads(site.misregistration_path.read_text())["scenes"]
    stack = open_stack(site.images)
    ref_path = stack.scenes[stack.reference].path
    for i, scene in enumerate(stack.scenes):
        if i == stack.reference:
            continue
        true = np.array(meta[scene.name]["ref_to_scene"])
        group = "other grid" if meta[scene.name]["other_grid"] else kind
        res = {}
        for method in ("local", "global"):
            t = time.perf_counter()
            reg = register_scene(stack, i, method=method)
            res[f"ours {method}"] = (registration_error(reg.ref_to_scene, true, shape=stack.shape),
                                     time.perf_counter() - t)
        t = time.perf_counter()
        ref, rv = stack.read(stack.reference)
        nominal = stack.nominal_ref_to_scene(i)
        mov, mv = stack.read(i, ref_to_scene=nominal)
        shift, _, _ = phase_cross_correlation(np.where(rv, ref.mean(axis=0), 0),
                                              np.where(mv, mov.mean(axis=0), 0), upsample_factor=100)
        sk = compose(nominal, np.array([[1.0, 0, -shift[1]], [0, 1.0, -shift[0]]]))
        res["skimage"] = (registration_error(sk, true, shape=stack.shape), time.perf_counter() - t)
        if aros is not None:
            for mode in ("global", "local"):
                opts = dict(band=3, max_shift=40)
                if mode == "local":
                    opts.update(grid_res=50, window=128)
                a = arosics(aros, ref_path, scene.path, mode, **opts)
                err = points_error(a["points"], true) if a.get("success", True) else float("nan")
                res[f"AROSICS {mode}"] = (err, a["seconds"])
        res["georeferencing"] = (registration_error(nominal, true, shape=stack.shape), 0.0)
        for name, (e, s) in res.items():
            table.setdefault(group, {}).setdefault(name, []).append((e, s))
        print(f"{kind} seed {seed} {scene.name} ({group}): "
              + "  ".join(f"{k} {e:.3f} px/{s:.2f} s" for k, (e, s) in res.items()), flush=True)


def run_s2(tmp: Path, aros: Path | None) -> None:
    from changedetect.coregister import register_scene
    from changedetect.stack import apply_mapping, open_stack

    ref = next(S2.glob("ref_*.jp2"))
    tgt = next(S2.glob("tgt_*.jp2"))
    manifest = tmp / "s2.csv"
    manifest.write_text(f"path,date\n{ref},2016-06-08\n{tgt},2016-05-29\n")
    stack = open_stack([ref, tgt], manifest=manifest, reference=str(ref))
    i = 1 - stack.reference
    for method in ("global", "local"):
        t = time.perf_counter()
        reg = register_scene(stack, i, method=method)
        dt = time.perf_counter() - t
        print(f"S2 ours {method}: {reg.model}, shift at the centre dx {reg.shift_px[0]:+.3f} "
              f"dy {reg.shift_px[1]:+.3f} px ({reg.shift_m[0]:+.2f} m E, {reg.shift_m[1]:+.2f} m N), "
              f"{reg.n_inliers}/{reg.n_tiepoints} tie points, {dt:.2f} s", flush=True)
        if aros is None:
            continue
        a = arosics(aros, ref, tgt, method, band=1, max_shift=20)
        p = np.array([pt for pt in a["points"] if pt[2] is not None], dtype=np.float64)
        inside = (p[:, 2] >= 0) & (p[:, 2] < stack.scenes[i].width) & (p[:, 3] >= 0) & \
                 (p[:, 3] < stack.scenes[i].height)
        p = p[inside]
        ox, oy = apply_mapping(reg.ref_to_scene, p[:, 0], p[:, 1])
        diff = np.column_stack([ox, oy]) - p[:, 2:]
        print(f"S2 AROSICS {method} ({a['seconds']:.1f} s): ours - AROSICS over {len(p)} points of "
              f"the overlap: mean ({diff[:, 0].mean():+.3f}, {diff[:, 1].mean():+.3f}) px, RMS "
              f"{np.sqrt(np.mean(np.sum(diff ** 2, axis=1))):.3f} px"
              + (f"; AROSICS shift x {a['shift']['x_px']:+.3f} y {a['shift']['y_px']:+.3f} px"
                 if method == "global" else f"; {a['tie_points_valid']} valid tie points"), flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hard", type=int, nargs="*", default=[1], help="seeds of hard sites")
    p.add_argument("--translation", type=int, nargs="*", default=[2], help="seeds of translation-only sites")
    p.add_argument("--size", type=int, default=800)
    p.add_argument("--arosics-python", type=Path, default=Path(os.environ.get("AROSICS_PYTHON", DEFAULT_AROSICS)))
    p.add_argument("--no-arosics", action="store_true")
    args = p.parse_args(argv)
    aros = None if args.no_arosics or not args.arosics_python.exists() else args.arosics_python
    if aros is None:
        print("AROSICS not run (install it with ../shared/tools/install-arosics.sh VENV and pass "
              "--arosics-python VENV/bin/python)")
    table: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.hard:
            run_site("hard", seed, args.size, Path(tmp), aros, table)
        for seed in args.translation:
            run_site("translation", seed, args.size, Path(tmp), aros, table)
        print(f"\nRMSE over scenes, reference px (max), and mean time per {args.size}x{args.size} 4-band pair:")
        for group, methods in table.items():
            print(f"  {group}: {len(next(iter(methods.values())))} scenes")
            for name, vals in methods.items():
                errs = [e for e, _ in vals]
                print(f"    {name:16s} {rms(errs):7.3f} ({max(errs):.3f})  {statistics.mean(s for _, s in vals):6.2f} s")
        if S2.exists():
            run_s2(Path(tmp), aros)
        else:
            print(f"S2 pair not found at {S2}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
