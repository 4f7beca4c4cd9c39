"""Speed and memory of the change kernels, as ratios against baselines measured in the same run.

Two (bands, size, size) float32 images (default 4 × 4000 × 4000, 256 MB each)
are generated deterministically: textured ground, a new gain/offset/noise in
the second image and a few hundred changed squares. For every kernel the
script prints

* its time as a ratio to ``np.copyto`` of the same input bytes (both images
  copied into preallocated arrays): 1.0 means "as fast as moving the data once";
* its time as a ratio to a plain NumPy implementation of the same formula
  (whole-array expressions, no chunking, no ``out=``);
* its peak extra memory (``tracemalloc``) as a multiple of the input bytes.

Then IR-MAD file to file against Orfeo ToolBox's single-pass
``otbcli_MultivariateAlterationDetector`` (Debian package ``otb-bin``) on the same
pair written as GeoTIFF, and the agreement of the two outputs (correlation of
matched MAD variates). OTB is skipped, with a note, when it is not installed.

Usage::

    python benchmarks/kernels.py                 # the figures in benchmarks/README.md
    python benchmarks/kernels.py --size 1000     # quick look
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from changedetect import detect  # noqa: E402
from changedetect.mad import fit_irmad  # noqa: E402
from changedetect.provenance import dispatch_paths  # noqa: E402


def make_pair(size: int, bands: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    from scipy import ndimage as ndi

    small = rng.normal(0, 1, (bands, size // 8 + 1, size // 8 + 1)).astype(np.float32)
    before = np.empty((bands, size, size), np.float32)
    for b in range(bands):
        up = ndi.zoom(small[b], 8, order=1)[:size, :size]
        before[b] = 1000 + 150 * b + 200 * up
    before += rng.normal(0, 20, before.shape).astype(np.float32)
    gain = np.linspace(0.9, 1.2, bands, dtype=np.float32)[:, None, None]
    after = before * gain + np.float32(40)
    after += rng.normal(0, 20, after.shape).astype(np.float32)
    for _ in range(size * size // 40000):
        r, c = rng.integers(0, size - 20, 2)
        after[:, r:r + 16, c:c + 16] += rng.normal(300, 100, (bands, 1, 1)).astype(np.float32)
    return before, after


def best_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def peak_memory(fn) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# --------------------------------------------------------------------------- plain references


def plain_cva(before, after, scale):
    return np.sqrt((((after - before) / scale[:, None, None]) ** 2).mean(axis=0))


def plain_irmad(before, after, max_iter=50, tol=1e-4):
    """Textbook IR-MAD on every pixel (float64, scipy chi2), as in Canty's scripts."""
    from scipy.linalg import eigh
    from scipy.stats import chi2

    nb = before.shape[0]
    z = np.vstack([before.reshape(nb, -1), after.reshape(nb, -1)]).astype(np.float64)
    w = np.ones(z.shape[1])
    old = None
    for it in range(max_iter):
        mean = (z * w).sum(axis=1) / w.sum()
        zc = z - mean[:, None]
        cov = (zc * w) @ zc.T / w.sum()
        s11, s22, s12 = cov[:nb, :nb], cov[nb:, nb:], cov[:nb, nb:]
        rho2, a = eigh(s12 @ np.linalg.solve(s22, s12.T), s11)
        rho = np.sqrt(np.clip(rho2, 0, 1))
        b = np.linalg.solve(s22, s12.T @ a) / rho
        mad = a.T @ zc[:nb] - b.T @ zc[nb:]
        chi = ((mad / np.sqrt(2 * (1 - rho))[:, None]) ** 2).sum(axis=0)
        w = chi2.sf(chi, nb)
        if old is not None and np.abs(rho - old).max() < tol:
            break
        old = rho
    return chi.reshape(before.shape[1:]), it + 1


def plain_pca_kmeans(before, after, scale, h=3, iters=20):
    from numpy.lib.stride_tricks import sliding_window_view

    d = plain_cva(before, after, scale)
    mu = d.mean()
    rows, cols = d.shape
    blocks = d[: rows // h * h, : cols // h * h].reshape(rows // h, h, cols // h, h).transpose(0, 2, 1, 3)
    blocks = blocks.reshape(-1, h * h) - mu
    ev, vec = np.linalg.eigh(np.cov(blocks.T))
    s = int(np.searchsorted(np.cumsum(ev[::-1]) / ev.sum(), 0.9) + 1)
    vec = vec[:, ::-1][:, :s]
    pad = np.pad(d - mu, h // 2, mode="reflect")
    win = sliding_window_view(pad, (h, h)).reshape(rows * cols, h * h)
    f = win @ vec
    c = np.stack([f[d.ravel() <= np.median(d)].mean(0), f[d.ravel() >= np.quantile(d, 0.99)].mean(0)])
    for _ in range(iters):
        lab = ((f[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
        c = np.stack([f[lab == k].mean(0) for k in (0, 1)])
    return lab.reshape(rows, cols)


def plain_structural(before, after, size=7):
    from skimage.metrics import structural_similarity

    x, y = before.mean(axis=0), after.mean(axis=0)
    return structural_similarity(x, y, win_size=size, data_range=float(x.max() - x.min()), full=True)[1]


# --------------------------------------------------------------------------- OTB


def write_tif(path, arr):
    import rasterio
    from rasterio.transform import from_origin

    with rasterio.open(path, "w", driver="GTiff", width=arr.shape[2], height=arr.shape[1],
                       count=arr.shape[0], dtype="float32", crs="EPSG:32637",
                       transform=from_origin(500000, 4000000, 0.5, 0.5), tiled=True,
                       blockxsize=512, blockysize=512) as ds:
        ds.write(arr)


def ours_file_to_file(in1, in2, out, *, reweight=True):
    """Read both images, fit (IR-)MAD, write the variates and chi-square: like OTB's app."""
    import rasterio

    with rasterio.open(in1) as a, rasterio.open(in2) as b:
        x, y, profile = a.read(), b.read(), a.profile
    t = fit_irmad(x, y, reweight=reweight, max_iter=50)
    r = t.apply(x, y, variates=True, pvalue=False)
    profile.update(count=x.shape[0] + 1, dtype="float32")
    with rasterio.open(out, "w", **profile) as ds:
        ds.write(r.variates, list(range(1, x.shape[0] + 1)))
        ds.write(r.chi2, x.shape[0] + 1)
    return t


def agreement(ours: np.ndarray, theirs: np.ndarray, step: int = 7) -> list[float]:
    """|correlation| of each OTB variate with its best-matching variate of ours (sampled)."""
    o = ours[:, ::step, ::step].reshape(ours.shape[0], -1).astype(np.float64)
    t = theirs[:, ::step, ::step].reshape(theirs.shape[0], -1).astype(np.float64)
    c = np.abs(np.corrcoef(np.vstack([t, o]))[: t.shape[0], t.shape[0]:])
    return [float(c[i].max()) for i in range(t.shape[0])]


def run_otb(before, after, repeat: int):
    import rasterio

    exe = shutil.which("otbcli_MultivariateAlterationDetector")
    if exe is None:
        print("\nOTB: otbcli_MultivariateAlterationDetector not found (Debian: apt install otb-bin); skipped.")
        return
    with tempfile.TemporaryDirectory() as tmp:
        p1, p2 = os.path.join(tmp, "before.tif"), os.path.join(tmp, "after.tif")
        write_tif(p1, before)
        write_tif(p2, after)
        o_otb, o_one, o_ir = (os.path.join(tmp, n) for n in ("otb.tif", "one.tif", "ir.tif"))
        env = dict(os.environ, OTB_LOGGER_LEVEL="WARNING")

        def otb():
            subprocess.run([exe, "-in1", p1, "-in2", p2, "-out", o_otb], check=True, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        t_otb = best_time(otb, repeat)
        t_ir = best_time(lambda: ours_file_to_file(p1, p2, o_ir), repeat)
        t_one = best_time(lambda: ours_file_to_file(p1, p2, o_one, reweight=False), repeat)
        tr = ours_file_to_file(p1, p2, o_ir)
        with rasterio.open(o_otb) as a, rasterio.open(o_one) as b, rasterio.open(o_ir) as c:
            m_otb = a.read()
            m_one = b.read(list(range(1, before.shape[0] + 1)))
            m_ir = c.read(list(range(1, before.shape[0] + 1)))
        print(f"\nIR-MAD file to file vs Orfeo ToolBox {otb_version(exe)} single-pass MAD "
              f"(both read two GeoTIFFs and write the variates; best of {repeat})")
        print(f"  OTB MultivariateAlterationDetector : {t_otb:7.2f} s")
        print(f"  ours, converged IR-MAD             : {t_ir:7.2f} s  = {t_ir / t_otb:.2f}x OTB "
              f"({tr.iterations} iterations, converged={tr.converged}; target <= 0.5x)")
        print(f"  ours, single-pass MAD              : {t_one:7.2f} s  = {t_one / t_otb:.2f}x OTB")
        a1 = agreement(m_one, m_otb)
        a2 = agreement(m_ir, m_otb)
        print("  agreement with OTB, |corr| of matched variates (MAD1..MADn, least to most correlated):")
        print("    ours single-pass: " + ", ".join(f"{x:.5f}" for x in a1))
        print("    ours IR-MAD     : " + ", ".join(f"{x:.5f}" for x in a2)
              + "   (reweighting moves the variates away from the plain MAD, by design)")


def otb_version(exe: str) -> str:
    try:
        res = subprocess.run([exe, "-help"], capture_output=True, text=True)
        for line in (res.stdout + res.stderr).splitlines():
            if "version" in line:
                return line.split("version")[-1].strip()
    except OSError:
        pass
    return "?"


#: NumPy dispatch paths that ``--paths`` can name ("avx2": the AVX-512 targets disabled).
PATHS = {k.replace("no-avx512", "avx2"): v for k, v in dispatch_paths().items()}


def plain_cva_direction(before, after, scale):
    d = (after - before) / scale[:, None, None]
    mag = np.sqrt((d ** 2).mean(axis=0))
    cos = d.sum(axis=0) / np.maximum(d.shape[0] * mag, 1e-30)      # sum_b d_b / (sqrt(nb) |d|)
    return mag, np.arccos(np.clip(cos, -1, 1))


def measure(args) -> list[dict]:
    """Time every kernel on this process's dispatch path; print and return one row per kernel."""
    before, after = make_pair(args.size, args.bands)
    nbytes = before.nbytes + after.nbytes
    from changedetect.provenance import cpu_dispatch

    cpu = cpu_dispatch()
    print(f"changedetect kernels on 2 × {args.bands}×{args.size}×{args.size} float32 "
          f"({nbytes / 2**20:.0f} MiB input); {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, Python {platform.python_version()}, NumPy {np.__version__}; "
          f"NumPy dispatch: {', '.join(cpu['numpy_dispatched']) or 'baseline only'}; "
          f"OpenBLAS {cpu['openblas_core']}")
    db, da = np.empty_like(before), np.empty_like(after)

    def copy():
        np.copyto(db, before)
        np.copyto(da, after)

    t_copy = best_time(copy, args.repeat + 2)
    del db, da
    print(f"baseline np.copyto of the input bytes: {t_copy * 1000:.1f} ms "
          f"({nbytes / t_copy / 1e9:.1f} GB/s)\n")
    scale = detect.robust_scale(detect.difference(before[:, ::16, ::16], after[:, ::16, ::16]))
    out3 = np.empty_like(before)
    out2 = np.empty(before.shape[1:], np.float32)

    rows = [
        ("difference", lambda: detect.difference(before, after, out=out3),
         lambda: after - before, True),
        ("ratio", lambda: detect.ratio(before, after, out=out3),
         lambda: (after + 1) / (before + 1), True),
        ("log_ratio", lambda: detect.log_ratio(before, after, out=out3),
         lambda: np.log((after + 1) / (before + 1)), True),
        ("cva magnitude", lambda: detect.cva(before, after, scale=scale, out=out2),
         lambda: plain_cva(before, after, scale), True),
        ("cva magnitude+direction", lambda: detect.cva(before, after, scale=scale, direction=True),
         lambda: plain_cva_direction(before, after, scale), True),
        ("irmad (converged, chi2 + p)", lambda: detect.irmad(before, after),
         None if args.no_plain_slow else (lambda: plain_irmad(before, after)), False),
        ("pca_kmeans (h=3)", lambda: detect.pca_kmeans(before, after, scale=scale),
         None if args.no_plain_slow else (lambda: plain_pca_kmeans(before, after, scale)), False),
        ("structural (7x7)", lambda: detect.structural(before, after),
         lambda: plain_structural(before, after), False),
    ]
    print(f"{'kernel':30s} {'time':>9s} {'/ copy':>7s} {'/ plain':>8s} {'plain':>9s} "
          f"{'peak mem / input':>17s}")
    out = []
    for name, fn, plain, simple in rows:
        t = best_time(fn, args.repeat)
        tp = best_time(plain, 1 if not simple else args.repeat) if plain is not None else None
        mem = peak_memory(fn)
        ratio_plain = f"{t / tp:8.2f}" if tp else f"{'-':>8s}"
        plain_s = f"{tp:8.2f}s" if tp else f"{'-':>9s}"
        target = "  (target <= 1.5x copy)" if simple and name != "cva magnitude+direction" else ""
        print(f"{name:30s} {t:8.3f}s {t / t_copy:7.2f} {ratio_plain} {plain_s} {mem / nbytes:17.2f}{target}")
        out.append({"kernel": name, "time": t, "copy": t_copy, "plain": tp, "memory": mem / nbytes})
    fit = fit_irmad(before, after)
    print(f"\nIR-MAD: {fit.iterations} iterations on {fit.n_pixels} sampled pixels, "
          f"converged={fit.converged}, rho={np.round(fit.rho, 5).tolist()}")
    if not args.no_otb:
        run_otb(before, after, max(1, args.repeat - 1))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=4000)
    ap.add_argument("--bands", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-otb", action="store_true")
    ap.add_argument("--no-plain-slow", action="store_true",
                    help="skip the slow plain references (IR-MAD, PCA-k-means on every pixel)")
    ap.add_argument("--paths", nargs="+", choices=sorted(PATHS), default=["native", "avx2"],
                    help="NumPy dispatch paths to time, each in its own process "
                         "(NPY_DISABLE_CPU_FEATURES); default: native and avx2")
    ap.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.single:
        rows = measure(args)
        if args.json:
            args.json.write_text(json.dumps(rows))
        return 0
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, path in enumerate(args.paths):
            env = dict(os.environ)
            env.pop("NPY_DISABLE_CPU_FEATURES", None)
            if PATHS[path]:
                env["NPY_DISABLE_CPU_FEATURES"] = PATHS[path]
            js = Path(tmp) / f"{path}.json"
            cmd = [sys.executable, __file__, "--single", "--json", str(js), "--size", str(args.size),
                   "--bands", str(args.bands), "--repeat", str(args.repeat)]
            cmd += ["--no-plain-slow"] * args.no_plain_slow + ["--no-otb"] * (args.no_otb or i > 0)
            print(f"\n=== path {path}: NPY_DISABLE_CPU_FEATURES={PATHS[path] or '(unset)'}", flush=True)
            r = subprocess.run(cmd, env=env)
            if r.returncode:
                return r.returncode
            results[path] = json.loads(js.read_text())
    print("\nEvery kernel on every path: time (s), ratio to the same run's plain NumPy, ratio to the copy")
    print(f"{'kernel':30s}" + "".join(f" {p + ' time':>12s} {'/ plain':>8s} {'/ copy':>7s}" for p in results)
          + "  ours <= plain everywhere")
    worst = 0.0
    for j, row in enumerate(next(iter(results.values()))):
        line = f"{row['kernel']:30s}"
        ok = True
        for p, rows in results.items():
            r = rows[j]
            ratio = r["time"] / r["plain"] if r["plain"] else float("nan")
            ok &= not (ratio > 1.0)
            worst = max(worst, ratio) if ratio == ratio else worst
            line += f" {r['time']:12.3f} {ratio:8.2f} {r['time'] / r['copy']:7.2f}"
        print(line + ("  yes" if ok else "  NO"))
    print(f"\nworst ratio to plain NumPy over kernels and paths: {worst:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
