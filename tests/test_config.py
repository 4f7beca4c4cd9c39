"""Config: every field described (group, help, range) and validated from that description."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from changedetect.config import FORMATS, GROUPS, Config
from changedetect.errors import InputError

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
    "outputs": ["formats", "save_registered", "pixel_products", "overwrite"],
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
    assert dataclasses.asdict(Config()) == {**OLD_PARAMETERS, "detector": "statistical", "model": None}
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
    assert (Config().detector, Config().model) == ("statistical", None)
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
