"""Convert the IEEE European Low Voltage Test Feeder's CSV folder into the feeder format.

The IEEE PES test feeder archive (European_LV_CSV/) holds ``Loads.csv`` (55
single-phase loads: name, bus, phase A/B/C, kV, PF, load shape), ``LoadShapes.csv``
(shape name -> file, 1440 points at 1 minute, ``useactual``) and
``Load Profiles/Load_profile_N.csv`` (``time,mult``: kW per minute from 00:01
to 24:00). No PyPI package ships those profiles (pandapower ships three
snapshots of the network only), so the importer reads a copy the user
downloaded from IEEE PES; nothing of it is bundled with phasekit.

Every load becomes a house with a phasekit node (metered, switchable) on its
published phase, at its published power factor; the transformer has a meter.
"""

import csv
from pathlib import Path

import numpy as np

from phasekit.feeder.format import Feeder, FeederFormatError

__all__ = ("convert",)

SOURCE = "IEEE PES European Low Voltage Test Feeder (European_LV_CSV), converted by phasekit"


def _table(path):
    """Rows of a CSV file after its leading '#' comment lines, as dicts, with line numbers."""
    try:
        f = open(path, newline="", encoding="utf-8-sig")
    except OSError as e:
        raise FeederFormatError("%s: cannot read: %s" % (path, e.strerror or e)) from e
    with f:
        lines = f.read().splitlines()
    start = 0
    while start < len(lines) and lines[start].lstrip().startswith("#"):
        start += 1
    reader = csv.DictReader(lines[start:])
    rows = []
    for k, row in enumerate(reader):
        rows.append((start + k + 2, {(key or "").strip(): (v or "").strip() for key, v in row.items()}))
    return rows


def _col(path, line, row, name):
    if name not in row:
        raise FeederFormatError("%s:%d: missing column %r" % (path, line, name))
    return row[name]


def convert(src):
    """Read the IEEE European LV folder ``src`` and return a Feeder."""
    src = Path(src)
    loads_csv = src / "Loads.csv"
    shapes_csv = src / "LoadShapes.csv"
    shape_file = {}
    for line, row in _table(shapes_csv):
        shape_file[_col(shapes_csv, line, row, "Name").lower()] = (line, _col(shapes_csv, line, row, "File"))
    folder = None
    for name in ("Load Profiles", "Load_Profiles", "Load profiles"):
        if (src / name).is_dir():
            folder = src / name
    if folder is None:
        raise FeederFormatError("%s: no 'Load Profiles' folder" % src)
    houses, phase, pf_rows, load_rows = [], [], [], []
    for line, row in _table(loads_csv):
        name = _col(loads_csv, line, row, "Name")
        ph = _col(loads_csv, line, row, "phases").upper()
        if ph not in ("A", "B", "C"):
            raise FeederFormatError("%s:%d: load %s: phase %r is not A, B or C" % (loads_csv, line, name, ph))
        try:
            pf = float(_col(loads_csv, line, row, "PF"))
        except ValueError:
            raise FeederFormatError("%s:%d: load %s: PF is not a number" % (loads_csv, line, name)) from None
        if not 0 < pf <= 1:
            raise FeederFormatError("%s:%d: load %s: PF %r outside (0, 1]" % (loads_csv, line, name, pf))
        shape = _col(loads_csv, line, row, "Yearly").lower()
        if shape not in shape_file:
            raise FeederFormatError("%s:%d: load %s: shape %r not in LoadShapes.csv" % (loads_csv, line, name, shape))
        profile = folder / shape_file[shape][1]
        kw = []
        for pline, prow in _table(profile):
            try:
                kw.append(float(_col(profile, pline, prow, "mult")))
            except ValueError:
                raise FeederFormatError("%s:%d: mult is not a number" % (profile, pline)) from None
        if len(kw) != 1440:
            raise FeederFormatError("%s: %d points, expected 1440 (one day at 1 minute)" % (profile, len(kw)))
        houses.append(name)
        phase.append("ABC".index(ph))
        pf_rows.append(pf)
        load_rows.append(kw)
    if not houses:
        raise FeederFormatError("%s: no loads" % loads_csv)
    load = np.asarray(load_rows)
    pf = np.repeat(np.asarray(pf_rows)[:, None], load.shape[1], axis=1)
    n = len(houses)
    return Feeder(houses, phase, [True] * n, [True] * n, load, pf, np.arange(load.shape[1]),
                  voltage_v=230.0, has_meter=True, name="ieee-european-lv", source=SOURCE)
