"""Config: every field described (group, help, range), validated from that, and the CLI built from it."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from changedetect.cli import build_parser, config_from_args
from changedetect.config import FORMATS, GROUPS, Config
from changedetect.errors import InputError

EXE = Path(sys.executable).parent / "detect-changes"
FIELDS = dataclasses.fields(Config)

#: The fields of each group, as issue 15 decided them (written out: a field added must be placed).
EXPECTED_GROUPS = {
    "inputs": ["reference", "bands", "pixel_size"],
    "registration": ["coregister", "on_registration_failure", "seed"],
    "change statistics": ["min_magnitude", "weak_fraction", "alpha", "persistence", "max_ndvi",
                          "shadow_max_angle", "shadow_min_flips", "transient_sigma", "transient_fill_m2",
                          "detector", "model"],
    "object shape": ["min_area_m2", "min_width_m", "max_elongation", "min_rectangularity", "min_solidity",
                     "min_core_width_m", "min_core_fraction", "min_outline_contrast", "rectangle_fill"],
    "dating": ["min_date_agreement", "min_lead"],
    "buildings": ["buildings", "building_id_column"],
    "outputs": ["formats", "save_registered", "pixel_products", "overwrite", "evidence", "report"],
    "resources": ["block", "memory_mb"],
}

#: run.json's "parameters" before issue 15 (dataclasses.asdict(Config())): same keys, order, values.
OLD_PARAMETERS = {
    "reference": "first", "coregister": "local", "on_registration_failure": "keep", "min_magnitude": 14.0,
    "weak_fraction": 0.5, "alpha": 0.01, "persistence": 2, "min_area_m2": 30.0, "min_width_m": 2.0,
    "max_ndvi": 0.3, "max_elongation": 6.0, "min_rectangularity": 0.3, "min_solidity": 0.5,
    "min_core_width_m": 4.0, "min_core_fraction": 0.5, "min_outline_contrast": 0.2,
    "shadow_max_angle": 6.0, "shadow_min_flips": 0.1, "min_date_agreement": 0.6, "rectangle_fill": 0.85,
    "transient_sigma": 3.0, "transient_fill_m2": 5000.0, "min_lead": 3, "block": 512,
    "formats": ("gpkg", "geojson"), "seed": 0, "save_registered": None, "buildings": None,
    "building_id_column": None, "pixel_products": True, "memory_mb": 256, "bands": None,
    "pixel_size": None, "overwrite": False,
}


def run(*args, **env):
    return subprocess.run([str(EXE), *map(str, args)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "100", **env})


def flag(f: dataclasses.Field) -> str:
    return f.metadata["flag"] or "--" + f.name.replace("_", "-")


# --------------------------------------------------------------------------- metadata and groups


def test_every_field_has_a_group_a_one_line_help_and_a_type():
    for f in FIELDS:
        meta = f.metadata
        assert meta["group"] in GROUPS, f.name
        assert meta["help"] and "\n" not in meta["help"] and len(meta["help"]) < 160, f.name
        assert meta["type"] in ("int", "float", "bool", "str", "path", "index or name", "strings"), f.name
        assert meta["optional"] == (f.default is None), f.name
        assert f.name in Config.__doc__, f"{f.name} is not documented in the Config docstring"


def test_groups_cover_every_field_exactly_once_in_order():
    groups = Config.groups()
    assert list(groups) == list(GROUPS) == list(EXPECTED_GROUPS)
    names = [f.name for members in groups.values() for f in members]
    assert sorted(names) == sorted(f.name for f in FIELDS) and len(names) == len(set(names)) == len(FIELDS)
    assert {g: [f.name for f in members] for g, members in groups.items()} == EXPECTED_GROUPS
    assert all(isinstance(f, dataclasses.Field) for members in groups.values() for f in members)


def test_run_record_keeps_its_keys_and_values():
    """run.json stores dataclasses.asdict(config): the old keys and values, in order, then the new ones."""
    assert dataclasses.asdict(Config()) == {**OLD_PARAMETERS, "detector": "auto", "model": None,
                                          "evidence": True, "report": False}
    assert list(dataclasses.asdict(Config()))[:len(OLD_PARAMETERS)] == list(OLD_PARAMETERS)
    # values are kept as given: an int threshold stays an int in run.json
    assert dataclasses.asdict(Config(min_magnitude=10))["min_magnitude"] == 10
    assert type(Config(min_magnitude=10).min_magnitude) is int


# --------------------------------------------------------------------------- ranges, from the metadata


def _edges(f: dataclasses.Field):
    """(value, accepted) just outside and at/just inside every finite bound of the field's range."""
    r, integer = f.metadata["range"], f.metadata["type"] == "int"
    for bound, included, outward in ((r.low, r.include_low, -math.inf), (r.high, r.include_high, math.inf)):
        if bound is None:
            continue
        if integer:
            step = -1 if outward < 0 else 1
            yield (bound + step, False) if included else (bound, False)
            yield (bound, True) if included else (bound - step, True)
        else:
            bound = float(bound)
            yield (math.nextafter(bound, outward), False) if included else (bound, False)
            yield (bound, True) if included else (math.nextafter(bound, -outward), True)


EDGE_CASES = [pytest.param(f, value, ok, id=f"{f.name}={value!r}")
              for f in FIELDS if f.metadata["range"] is not None for value, ok in _edges(f)]


def test_every_numeric_field_has_a_range():
    numeric = {f.name for f in FIELDS if f.metadata["type"] in ("int", "float")}
    assert numeric == {f.name for f in FIELDS if f.metadata["range"] is not None}
    assert len(EDGE_CASES) >= 2 * len(numeric)


@pytest.mark.parametrize("f, value, ok", EDGE_CASES)
def test_range_edges(f, value, ok):
    if ok:
        assert getattr(Config(**{f.name: value}), f.name) == value
    else:
        with pytest.raises(InputError) as err:
            Config(**{f.name: value})
        msg = str(err.value)
        assert msg.startswith(f"{f.name}={value!r} is out of range: it must be {f.metadata['range']} ("), msg
        assert f.metadata["help"] in msg


#: The rules Config had before issue 15 (written out, not from the metadata), and new ones.
RULES = [
    # name, refused, accepted
    ("alpha", [0, 0.5, -0.1, 0.9], [1e-9, 0.01, 0.4999]),
    ("weak_fraction", [0, 1.01], [1, 0.01]),
    ("min_magnitude", [0, -3, math.nan], [0.001, 14, math.inf]),
    ("persistence", [0, -1], [1, 5]),
    ("max_elongation", [0.5, 0.999], [1, 6.0, math.inf]),
    ("min_area_m2", [-0.1, -30], [0, 30]),
    ("block", [63, 0], [64, 4096]),
    ("memory_mb", [15, 1], [16, 256]),
    ("min_lead", [1, 0], [2, 3]),
    ("transient_fill_m2", [-1], [0, 5000]),
    ("min_rectangularity", [5, -0.1, 1.01], [0, 0.3, 1]),
    ("shadow_max_angle", [0, 90.01, -6], [0.1, 6, 90]),
    ("max_ndvi", [-1.1, 1.1], [-1, 0, 1]),
    ("pixel_size", [0, -0.5], [0.5, None]),
    ("seed", [-1], [0, 12345]),
]


@pytest.mark.parametrize("name, refused, accepted", RULES, ids=[r[0] for r in RULES])
def test_rules(name, refused, accepted):
    for value in refused:
        with pytest.raises(InputError, match=rf"^{name}=.* is out of range: it must be "):
            Config(**{name: value})
    for value in accepted:
        got = getattr(Config(**{name: value}), name)
        assert got == value or (value is not None and math.isnan(value) and math.isnan(got))


def test_messages_name_the_field_and_the_range():
    with pytest.raises(InputError) as err:
        Config(min_rectangularity=5)
    assert str(err.value) == ("min_rectangularity=5 is out of range: it must be between 0 and 1 (smallest share "
                              "of its rotated rectangle a change must fill).")
    with pytest.raises(InputError, match=r"^persistence=0 is out of range: it must be at least 1 \("):
        Config(persistence=0)
    with pytest.raises(InputError, match=r"^alpha=0\.5 is out of range: it must be greater than 0 and less "
                                         r"than 0\.5 \("):
        Config(alpha=0.5)
    with pytest.raises(InputError, match=r"^weak_fraction=0 is out of range: it must be greater than 0 and "
                                         r"at most 1 \("):
        Config(weak_fraction=0)
    with pytest.raises(ValueError):          # InputError is a ValueError for callers who do not know it
        Config(min_solidity=2)


def test_wrong_types_are_refused():
    with pytest.raises(InputError, match=r"^persistence=2\.5 is not valid: it must be an integer, at least 1"):
        Config(persistence=2.5)
    with pytest.raises(InputError, match=r"^block=True is not valid: it must be an integer"):
        Config(block=True)                   # bool is not an int here
    with pytest.raises(InputError, match=r"^min_magnitude='14' is not valid: it must be a number"):
        Config(min_magnitude="14")
    with pytest.raises(InputError, match=r"^alpha=False is not valid"):
        Config(alpha=False)
    with pytest.raises(InputError, match=r"^overwrite=1 is not valid: it must be True or False"):
        Config(overwrite=1)
    with pytest.raises(InputError, match=r"^reference=True is not valid: it must be an index \(int\) or a name"):
        Config(reference=True)
    with pytest.raises(InputError, match=r"^reference=1\.5 is not valid"):
        Config(reference=1.5)
    with pytest.raises(InputError, match=r"^buildings='' is not valid"):
        Config(buildings="")
    with pytest.raises(InputError, match=r"^building_id_column=3 is not valid: it must be a non-empty string"):
        Config(building_id_column=3)
    # NumPy scalars are numbers: stored as Python numbers (run.json writes them as numbers)
    c = Config(persistence=np.int64(3), min_magnitude=np.float32(10.5), block=np.uint16(256))
    assert (c.persistence, c.min_magnitude, c.block) == (3, 10.5, 256)
    assert (type(c.persistence), type(c.min_magnitude), type(c.block)) == (int, float, int)
    assert Config(min_magnitude=10).min_magnitude == 10          # floats accept ints


def test_choices_and_tuples_of_strings():
    with pytest.raises(InputError, match=r"^coregister='magic' is not valid; choose one of local, global, none"):
        Config(coregister="magic")
    with pytest.raises(InputError, match="choose one of keep, raise, skip"):
        Config(on_registration_failure="ignore")
    with pytest.raises(InputError, match=r"^formats=\(\) is not valid; choose one or more of gpkg, geojson, kml"):
        Config(formats=())
    with pytest.raises(InputError, match=r"^formats=\('shp',\)"):
        Config(formats=("shp",))
    with pytest.raises(InputError, match=r"^formats='gpkg' is not valid"):
        Config(formats="gpkg")               # a string is not a tuple of formats
    assert Config(formats=["kml", "gpkg"]).formats == ("kml", "gpkg")       # converted to a tuple
    assert Config(formats=iter(FORMATS)).formats == FORMATS
    assert Config(bands=["red", "green", "blue"]).bands == ("red", "green", "blue")
    for bad in ("red,green,blue", (), ("red", ""), ("red", 2), 4):
        with pytest.raises(InputError, match=r"^bands=.* is not valid: it must be a tuple of one or more"):
            Config(bands=bad)
    for ok in (0, -1, 3, "first", "last", "2016-01-01", "scene_b.tif", Path("scene_b.tif")):
        assert Config(reference=ok).reference == ok


def test_detector_and_model():
    assert (Config().detector, Config().model) == ("auto", None)
    assert Config(detector="mine").detector == "mine"     # plugins: names are checked when the run starts
    for bad in ("", None, 3):
        with pytest.raises(InputError, match=r"^detector=.* is not valid: it must be a non-empty string"):
            Config(detector=bad)
    with pytest.raises(InputError, match=r"detector='onnx' needs a model file.*model=.*--model"):
        Config(detector="onnx")
    assert Config(detector="onnx", model="building.onnx").model == "building.onnx"
    assert Config(detector="onnx", model=Path("building.onnx")).model == Path("building.onnx")
    with pytest.raises(InputError, match=r"^model='' is not valid"):
        Config(detector="onnx", model="")


# --------------------------------------------------------------------------- the command line


def _help_entries(text: str) -> dict[str, str]:
    """Option -> its help text (lines joined) from ``--help`` output."""
    entries, current = {}, None
    for line in text.splitlines():
        m = re.match(r"^  (-[^ ].*?)(?: {2,}(.*))?$", line)
        if m:
            current = [m.group(2) or ""]
            for opt in re.findall(r"(?:^|[ ,])(--?[a-z][\w-]*)", m.group(1)):
                entries[opt] = current
        elif current is not None and line.startswith("    "):
            current.append(line.strip())
        else:
            current = None
    return {opt: " ".join(" ".join(lines).split()) for opt, lines in entries.items()}


def _parse_shown(text: str, like):
    """A default as --help shows it, read back the way a user would, as a value like ``like``."""
    if like is None:
        return None if text == "none" else text
    if isinstance(like, bool):
        return {"yes": True, "no": False}[text]
    if isinstance(like, tuple):
        return tuple(t.strip() for t in text.split(","))
    return type(like)(text)


@pytest.fixture(scope="module")
def help_text():
    p = run("--help")
    assert p.returncode == 0 and not p.stderr, p.stderr
    return p.stdout


def test_help_lists_every_option_with_its_default(help_text):
    entries = _help_entries(help_text)
    defaults = Config()
    for f in FIELDS:
        opt = flag(f)
        assert opt in entries, f"{opt} ({f.name}) is not in --help"
        m = re.search(r"default: ([^;()]*)\)$", entries[opt])
        assert m, (opt, entries[opt])
        assert _parse_shown(m.group(1), getattr(defaults, f.name)) == getattr(defaults, f.name), (opt, m.group(1))
        assert entries[opt].startswith(f.metadata["help"][:40]), (opt, entries[opt])
        if f.metadata["range"] is not None:
            assert f"({f.metadata['range']}; default:" in entries[opt], (opt, entries[opt])
    assert "--no-pixel-products" in entries
    assert "default: results" in entries["--out"]
    for opt in ("--manifest", "--quiet", "--verbose", "--version", "-q", "-v"):
        assert opt in entries, opt
    # one argument group per Config group, in order
    headings = [line[:-1] for line in help_text.splitlines() if re.match(r"^[a-z][a-z ]*:$", line)]
    assert headings == ["options", *GROUPS]


def test_existing_options_keep_working():
    p = build_parser()
    given = ["--reference", "2", "--coregister", "global", "--on-registration-failure", "skip",
             "--min-magnitude", "10", "--alpha", "0.05", "--persistence", "3", "--min-area", "12.5",
             "--max-elongation", "8", "--buildings", "fp.gpkg", "--building-id-column", "osm_id",
             "--bands", "red, green,blue", "--pixel-size", "0.5", "--overwrite", "--format", "kml",
             "--format", "gpkg", "--block", "256", "--save-registered", "reg", "--out", "somewhere"]
    args = p.parse_args(["a.tif", "b.tif", *given])
    assert (args.images, args.out) == (["a.tif", "b.tif"], "somewhere")
    assert config_from_args(args) == Config(
        reference=2, coregister="global", on_registration_failure="skip", min_magnitude=10.0, alpha=0.05,
        persistence=3, min_area_m2=12.5, max_elongation=8.0, buildings="fp.gpkg",
        building_id_column="osm_id", bands=("red", "green", "blue"), pixel_size=0.5, overwrite=True,
        formats=("kml", "gpkg"), block=256, save_registered="reg")
    # --reference: an int index (negative too) or a string; --format once replaces the default
    assert config_from_args(p.parse_args(["--reference", "-1"])).reference == -1
    assert config_from_args(p.parse_args(["--reference", "2016-05-01"])).reference == "2016-05-01"
    assert config_from_args(p.parse_args(["--format", "geojson"])).formats == ("geojson",)
    assert config_from_args(p.parse_args(["--bands", ""])).bands is None


#: A value other than the default for every field, and how it is written on the command line.
EVERY_OPTION = {
    "reference": ("last", "last"), "coregister": ("none", "none"), "on_registration_failure": ("raise", "raise"),
    "min_magnitude": (9.5, "9.5"), "weak_fraction": (1.0, "1"), "alpha": (0.2, "0.2"), "persistence": (4, "4"),
    "min_area_m2": (0.0, "0"), "min_width_m": (1.5, "1.5"), "max_ndvi": (-0.2, "-0.2"),
    "max_elongation": (10.0, "10"), "min_rectangularity": (1.0, "1"), "min_solidity": (0.0, "0"),
    "min_core_width_m": (3.0, "3"), "min_core_fraction": (0.25, "0.25"), "min_outline_contrast": (0.5, "0.5"),
    "shadow_max_angle": (90.0, "90"), "shadow_min_flips": (0.3, "0.3"), "min_date_agreement": (0.9, "0.9"),
    "rectangle_fill": (0.7, "0.7"), "transient_sigma": (2.5, "2.5"), "transient_fill_m2": (0.0, "0"),
    "min_lead": (2, "2"), "block": (1024, "1024"), "formats": (("kml",), "kml"), "seed": (7, "7"),
    "save_registered": ("reg", "reg"), "buildings": ("fp.geojson", "fp.geojson"),
    "building_id_column": ("id", "id"), "pixel_products": (False, None), "evidence": (False, None), "memory_mb": (64, "64"),
    "bands": (("nir", "red", "-"), "nir,red,-"), "pixel_size": (2.0, "2"), "overwrite": (True, None), "report": (True, None),
    "detector": ("onnx", "onnx"), "model": ("m.onnx", "m.onnx"),
}


def test_every_field_can_be_set_on_the_command_line():
    assert set(EVERY_OPTION) == {f.name for f in FIELDS}
    argv = []
    for f in FIELDS:
        value, text = EVERY_OPTION[f.name]
        if f.name in ("pixel_products", "evidence"):
            argv.append("--no-" + f.name.replace("_", "-"))
        else:
            argv += [flag(f)] if text is None else [flag(f), text]
    config = config_from_args(build_parser().parse_args(argv))
    assert config == Config(**{name: value for name, (value, _) in EVERY_OPTION.items()})
    assert config_from_args(build_parser().parse_args(["--pixel-products"])).pixel_products is True


def test_an_empty_command_line_is_the_default_config():
    args = build_parser().parse_args([])
    assert config_from_args(args) == Config()
    for f in FIELDS:                          # argparse's own defaults are Config's, too
        assert getattr(args, f.name) == getattr(Config(), f.name), f.name


@pytest.mark.parametrize("argv, needles", [
    (["--min-rectangularity", "5"], ["argument --min-rectangularity: '5' is out of range", "between 0 and 1"]),
    (["--persistence", "0"], ["argument --persistence: '0' is out of range", "at least 1"]),
    (["--persistence", "2.5"], ["argument --persistence: '2.5' is not valid", "an integer, at least 1"]),
    (["--alpha", "0.5"], ["argument --alpha: '0.5' is out of range", "greater than 0 and less than 0.5"]),
    (["--shadow-max-angle", "91"], ["argument --shadow-max-angle: '91' is out of range", "at most 90"]),
    (["--min-area", "-1"], ["argument --min-area: '-1' is out of range", "at least 0"]),
    (["--pixel-size", "0"], ["argument --pixel-size: '0' is out of range", "greater than 0"]),
    (["--memory", "8"], ["argument --memory: '8' is out of range", "at least 16"]),
    (["--block", "big"], ["argument --block: 'big' is not valid", "an integer, at least 64"]),
    (["--bands", "red,,blue"], ["argument --bands:"]),
    (["--detector", "nope"], ["argument --detector: invalid choice: 'nope'", "statistical", "onnx"]),
    (["--format", "shp"], ["argument --format: invalid choice: 'shp'"]),
], ids=lambda v: " ".join(v) if isinstance(v, list) and v[0].startswith("--") else None)
def test_cli_refuses_an_invalid_value_naming_the_option(tmp_path, argv, needles):
    out = tmp_path / "out"
    p = run("a_2015-01-01.tif", "b_2016-01-01.tif", "--out", out, *argv)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr and p.stderr.startswith("usage: detect-changes")
    assert "detect-changes: error: argument " in p.stderr
    for n in needles:
        assert n in p.stderr, p.stderr
    assert not out.exists()


def test_cli_refuses_onnx_without_a_model(tmp_path):
    out = tmp_path / "out"
    p = run("a_2015-01-01.tif", "b_2016-01-01.tif", "--out", out, "--detector", "onnx")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.startswith("detect-changes: error: detector='onnx' needs a model file") and "--model" in p.stderr
    assert not out.exists()
