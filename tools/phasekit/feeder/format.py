"""Read and validate a feeder folder (docs/feeder-format.md).

A feeder is a folder of plain CSV files anyone can write from a spreadsheet:

* ``houses.csv``  -- ``house,phase,switchable,metered``, one row per house, and an
  optional ``switch`` column (``mechanical`` or ``solid-state``: the node's switch hardware);
* ``load_kw.csv`` -- ``minute`` then one column per house: active power, kW, negative for export;
* ``pf.csv``      -- optional, same shape: power factor per house and minute (default 0.95);
* ``feeder.json`` -- optional: ``nominal_voltage_v`` (230), ``transformer_meter`` (true),
  ``name``, ``source``.

Every problem is a ``FeederFormatError`` that names the file and line (and
column where there is one), e.g. ``load_kw.csv:17: column h012: 'abc' is not a
number``; nothing is guessed or silently dropped.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from phasecore import codes
from phasekit.errors import PhasekitError

__all__ = (
    "Feeder",
    "FeederFormatError",
    "load",
    "write",
    "PHASES",
    "DEFAULT_PF",
    "DEFAULT_VOLTAGE_V",
    "SWITCH_NAMES",
    "assign_switch",
    "MAX_DAYS",
    "MINUTES_PER_DAY",
)

# A, B, C as the wire numbers them (phasecore.codes), and 3 for a three-phase house
# (phasecore.balancer.THREE_PHASE).
PHASE_NAMES = codes.PHASE_NAMES[:3] + ("ABC",)
PHASES = dict((name, i) for i, name in enumerate(PHASE_NAMES))
DEFAULT_PF = 0.95
DEFAULT_VOLTAGE_V = 230.0
_BOOL = {"0": False, "1": True, "false": False, "true": True, "no": False, "yes": True}
# The node's switch hardware (phasecore.balancer.SWITCH_KINDS): 0 mechanical, 1 solid-state.
SWITCH_NAMES = ("mechanical", "solid-state")
_JSON_KEYS = {"nominal_voltage_v", "transformer_meter", "name", "source", "seed", "generator"}
MAX_HOUSES = 5000
MAX_DAYS = 7
MAX_MINUTES = MAX_DAYS * 1440
MINUTES_PER_DAY = 1440


class FeederFormatError(PhasekitError, ValueError):
    """A feeder folder breaks the format; the message names file and line."""


class Feeder:
    """A validated feeder day.

    houses      list of house ids (str), in houses.csv order
    phase       int array (H,): 0, 1, 2 for A, B, C; 3 for a three-phase house
    switchable  bool array (H,)
    metered     bool array (H,): the house has a phasekit node
    load_kw     float array (H, T): active power per minute, kW, negative = export
    pf          float array (H, T): power factor, 0 < pf <= 1
    minutes     int array (T,): the minute stamps from load_kw.csv
    voltage_v   nominal phase voltage
    has_meter   whether the transformer has a 3-phase meter
    switch      int array (H,): the node's switch kind, 0 mechanical, 1 solid-state
                (``SWITCH_NAMES``; houses.csv's optional ``switch`` column, default mechanical)

    A feeder of several days (up to ``MAX_DAYS``) is one continuous run of
    minutes: ``n_days`` is how many whole or part days it spans.
    """

    def __init__(
        self,
        houses: Iterable[str],
        phase: ArrayLike,
        switchable: ArrayLike,
        metered: ArrayLike,
        load_kw: ArrayLike,
        pf: ArrayLike | None = None,
        minutes: ArrayLike | None = None,
        voltage_v: float = DEFAULT_VOLTAGE_V,
        has_meter: bool = True,
        name: str = "feeder",
        source: str = "",
        switch: ArrayLike | None = None,
    ):
        self.houses = list(houses)
        self.phase: NDArray[np.int8] = np.asarray(phase, dtype=np.int8)
        self.switchable: NDArray[np.bool_] = np.asarray(switchable, dtype=bool)
        self.metered: NDArray[np.bool_] = np.asarray(metered, dtype=bool)
        self.load_kw: NDArray[np.float64] = np.asarray(load_kw, dtype=float)
        h, t = self.load_kw.shape
        self.pf: NDArray[np.float64] = np.full((h, t), DEFAULT_PF) if pf is None else np.asarray(pf, dtype=float)
        self.minutes: NDArray[np.int_] = np.arange(t) if minutes is None else np.asarray(minutes, dtype=int)
        self.voltage_v = float(voltage_v)
        self.has_meter = bool(has_meter)
        self.name = name
        self.source = source
        self.switch: NDArray[np.int8] = (
            np.zeros(len(self.houses), dtype=np.int8) if switch is None else np.asarray(switch, dtype=np.int8)
        )

    @property
    def n_houses(self) -> int:
        """H, the number of houses."""
        return len(self.houses)

    @property
    def n_minutes(self) -> int:
        """T, the number of minutes."""
        return self.load_kw.shape[1]

    @property
    def n_days(self) -> int:
        """How many days the minutes span (a part day counts)."""
        return -(-self.n_minutes // MINUTES_PER_DAY)

    def movable(self) -> NDArray[np.bool_]:
        """Houses a controller may move: metered, switchable, single-phase."""
        return self.metered & self.switchable & (self.phase != 3)

    def components(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Per house and minute, active and reactive current per phase it sits on (A).

        The brief's model: a single-phase house draws P/(V*pf), signed for
        export, lagging its voltage by acos(pf); a three-phase house splits its
        load evenly, so each of its phases carries a third of that.
        """
        share = np.where(self.phase == 3, 1.0 / 3.0, 1.0)[:, None]
        current = self.load_kw * 1000.0 / (self.voltage_v * self.pf) * share
        ip = current * self.pf
        iq = current * np.sqrt(np.clip(1.0 - self.pf * self.pf, 0.0, 1.0))
        return ip, iq

    def summary(self) -> str:
        """One line: name, houses by phase, metered and movable, minutes, meter."""
        ph = [int((self.phase == p).sum()) for p in range(4)]
        ss = int((self.switch == 1).sum())
        return "%s: %d houses (A %d, B %d, C %d, three-phase %d; %d metered, %d movable%s), %d minutes, %s meter" % (
            self.name,
            self.n_houses,
            ph[0],
            ph[1],
            ph[2],
            ph[3],
            int(self.metered.sum()),
            int(self.movable().sum()),
            ", %d solid-state" % ss if ss else "",
            self.n_minutes,
            "with" if self.has_meter else "no",
        )


def assign_switch(feeder: Feeder, share: float, seed: int) -> Feeder:
    """Give ``share`` (0..1) of ``feeder``'s switchable houses solid-state switches, drawn with ``seed``.

    The rest are mechanical. Changes ``feeder.switch`` in place and returns the feeder.
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError("solid-state share must be 0..1, got %r" % (share,))
    movable = np.nonzero(feeder.switchable)[0]
    rng = np.random.default_rng([seed, 4])
    pick = rng.permutation(movable)[: int(round(share * len(movable)))]
    feeder.switch = np.zeros(feeder.n_houses, dtype=np.int8)
    feeder.switch[pick] = 1
    return feeder


def load(folder: str | os.PathLike[str]) -> Feeder:
    """Read and validate the feeder in ``folder``; raises FeederFormatError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FeederFormatError("%s: not a folder" % folder)
    meta = _read_json(folder / "feeder.json")
    houses, phase, switchable, metered, switch = _read_houses(folder / "houses.csv")
    minutes, load_kw = _read_matrix(folder / "load_kw.csv", houses, _kw)
    pf: NDArray[np.float64] | None = None
    if (folder / "pf.csv").exists():
        pf_minutes, pf = _read_matrix(folder / "pf.csv", houses, _pf)
        if len(pf_minutes) != len(minutes) or (pf_minutes != minutes).any():
            raise FeederFormatError(
                "%s: minutes differ from load_kw.csv (%d rows against %d)"
                % (folder / "pf.csv", len(pf_minutes), len(minutes))
            )
    return Feeder(
        houses,
        phase,
        switchable,
        metered,
        load_kw,
        pf,
        minutes,
        voltage_v=meta.get("nominal_voltage_v", DEFAULT_VOLTAGE_V),
        has_meter=meta.get("transformer_meter", True),
        name=meta.get("name", folder.name),
        source=meta.get("source", ""),
        switch=switch,
    )


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        text = path.read_text()
        meta = json.loads(text)
    except OSError as e:
        raise FeederFormatError("%s: cannot read: %s" % (path, e.strerror or e)) from e
    except ValueError as e:
        raise FeederFormatError("%s:%d: not valid JSON: %s" % (path, getattr(e, "lineno", 0), e)) from e
    if not isinstance(meta, dict):
        raise FeederFormatError("%s:1: expected a JSON object" % path)
    unknown = sorted(set(meta) - _JSON_KEYS)
    if unknown:
        raise FeederFormatError(
            "%s:%d: unknown key %r; known: %s"
            % (path, _json_line(text, unknown[0]), unknown[0], ", ".join(sorted(_JSON_KEYS)))
        )
    v = meta.get("nominal_voltage_v", DEFAULT_VOLTAGE_V)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 50 <= v <= 1000:
        raise FeederFormatError(
            "%s:%d: nominal_voltage_v = %r: expected a phase voltage 50..1000 V"
            % (path, _json_line(text, "nominal_voltage_v"), v)
        )
    m = meta.get("transformer_meter", True)
    if not isinstance(m, bool):
        raise FeederFormatError(
            "%s:%d: transformer_meter = %r: expected true or false" % (path, _json_line(text, "transformer_meter"), m)
        )
    return meta


def _json_line(text: str, key: str) -> int:
    for i, line in enumerate(text.splitlines(), 1):
        if '"%s"' % key in line:
            return i
    return 1


def _open_csv(path: Path) -> IO[str]:
    try:
        f = open(path, newline="", encoding="utf-8")
    except FileNotFoundError:
        raise FeederFormatError("%s: missing (every feeder needs houses.csv and load_kw.csv)" % path) from None
    except OSError as e:
        raise FeederFormatError("%s: cannot read: %s" % (path, e.strerror or e)) from e
    return f


def _rows(path: Path, f: IO[str]) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) for each non-empty, non-comment row."""
    reader = csv.reader(f)
    try:
        for cells in reader:
            if not cells or (len(cells) == 1 and not cells[0].strip()) or cells[0].lstrip().startswith("#"):
                continue
            yield reader.line_num, [c.strip() for c in cells]
    except csv.Error as e:
        raise FeederFormatError("%s:%d: not valid CSV: %s" % (path, reader.line_num, e)) from e
    except UnicodeDecodeError as e:
        raise FeederFormatError("%s: not UTF-8 text: %s" % (path, e)) from e


def _read_houses(path: Path) -> tuple[list[str], list[int], list[bool], list[bool], list[int]]:
    with _open_csv(path) as f:
        rows = _rows(path, f)
        try:
            line, header = next(rows)
        except StopIteration:
            raise FeederFormatError("%s: empty; expected a header house,phase,switchable,metered" % path) from None
        cols: dict[str, int] = {}
        for j, name in enumerate(header):
            key = name.lower()
            if key in cols:
                raise FeederFormatError("%s:%d: column %r appears twice" % (path, line, name))
            cols[key] = j
        for need in ("house", "phase", "switchable", "metered"):
            if need not in cols:
                raise FeederFormatError(
                    "%s:%d: missing column %r; the header must name house,phase,switchable,metered" % (path, line, need)
                )
        houses: list[str] = []
        phase: list[int] = []
        switchable: list[bool] = []
        metered: list[bool] = []
        switch: list[int] = []
        seen: dict[str, int] = {}
        for line, cells in rows:
            if len(cells) != len(header):
                raise FeederFormatError("%s:%d: %d cells, the header has %d" % (path, line, len(cells), len(header)))
            hid = cells[cols["house"]]
            if not hid:
                raise FeederFormatError("%s:%d: empty house id" % (path, line))
            if hid in seen:
                raise FeederFormatError("%s:%d: house %r repeats (first on line %d)" % (path, line, hid, seen[hid]))
            seen[hid] = line
            ph = cells[cols["phase"]].upper()
            if ph not in PHASES:
                raise FeederFormatError(
                    "%s:%d: house %s: phase %r is not A, B, C or ABC" % (path, line, hid, cells[cols["phase"]])
                )
            sw = _flag(path, line, hid, "switchable", cells[cols["switchable"]])
            me = _flag(path, line, hid, "metered", cells[cols["metered"]])
            if sw and ph == "ABC":
                raise FeederFormatError("%s:%d: house %s: a three-phase house cannot be switchable" % (path, line, hid))
            if sw and not me:
                raise FeederFormatError(
                    "%s:%d: house %s: switchable but not metered (the relay is part of the node)" % (path, line, hid)
                )
            kind = 0
            if "switch" in cols:
                text = cells[cols["switch"]].lower()
                if text not in SWITCH_NAMES:
                    raise FeederFormatError(
                        "%s:%d: house %s: switch %r is not mechanical or solid-state"
                        % (path, line, hid, cells[cols["switch"]][:40])
                    )
                kind = SWITCH_NAMES.index(text)
            houses.append(hid)
            phase.append(PHASES[ph])
            switchable.append(sw)
            metered.append(me)
            switch.append(kind)
            if len(houses) > MAX_HOUSES:
                raise FeederFormatError("%s:%d: more than %d houses" % (path, line, MAX_HOUSES))
    if not houses:
        raise FeederFormatError("%s: no houses" % path)
    return houses, phase, switchable, metered, switch


def _flag(path: Path, line: int, hid: str, name: str, text: str) -> bool:
    v = _BOOL.get(text.lower())
    if v is None:
        raise FeederFormatError("%s:%d: house %s: %s %r is not 0 or 1" % (path, line, hid, name, text))
    return v


def _kw(text: str) -> float:
    v = float(text)
    if not math.isfinite(v) or abs(v) > 10000.0:
        raise ValueError("outside +-10000 kW")
    return v


def _pf(text: str) -> float:
    v = float(text)
    if not 0.0 < v <= 1.0:
        raise ValueError("outside (0, 1]")
    return v


def _read_matrix(
    path: Path, houses: list[str], parse: Callable[[str], float]
) -> tuple[NDArray[np.int_], NDArray[np.float64]]:
    with _open_csv(path) as f:
        rows = _rows(path, f)
        try:
            line, header = next(rows)
        except StopIteration:
            raise FeederFormatError("%s: empty; expected a header minute,<house ids>" % path) from None
        if not header or header[0].lower() != "minute":
            raise FeederFormatError(
                "%s:%d: the first column must be 'minute', got %r" % (path, line, header[0] if header else "")
            )
        col_of: dict[str, int] = {}
        for j, name in enumerate(header[1:], 1):
            if name in col_of:
                raise FeederFormatError("%s:%d: column %r appears twice" % (path, line, name))
            col_of[name] = j
        known = set(houses)
        extra = [h for h in header[1:] if h not in known]
        if extra:
            raise FeederFormatError("%s:%d: column %r is not a house in houses.csv" % (path, line, extra[0]))
        missing = [h for h in houses if h not in col_of]
        if missing:
            raise FeederFormatError("%s:%d: no column for house %r from houses.csv" % (path, line, missing[0]))
        order = [col_of[h] for h in houses]
        minutes: list[int] = []
        values: list[list[float]] = []
        for line, cells in rows:
            if len(cells) != len(header):
                raise FeederFormatError("%s:%d: %d cells, the header has %d" % (path, line, len(cells), len(header)))
            try:
                m = int(cells[0])
            except ValueError:
                raise FeederFormatError("%s:%d: minute %r is not an integer" % (path, line, cells[0])) from None
            if minutes and m != minutes[-1] + 1:
                raise FeederFormatError(
                    "%s:%d: minute %d does not follow %d (one row per minute, in order)" % (path, line, m, minutes[-1])
                )
            row = [0.0] * len(order)
            for k, j in enumerate(order):
                try:
                    row[k] = parse(cells[j])
                except ValueError as e:
                    raise FeederFormatError(
                        "%s:%d: column %s: %r is not a valid value (%s)" % (path, line, header[j], cells[j], e)
                    ) from None
            minutes.append(m)
            values.append(row)
            if len(minutes) > MAX_MINUTES:
                raise FeederFormatError("%s:%d: more than %d minutes" % (path, line, MAX_MINUTES))
    if not minutes:
        raise FeederFormatError("%s: no data rows" % path)
    return np.asarray(minutes, dtype=int), np.asarray(values, dtype=float).T.copy()


def write(
    feeder: Feeder, folder: str | os.PathLike[str], write_pf: bool = True, meta: Mapping[str, Any] | None = None
) -> None:
    """Write ``feeder`` in the format (used by the generator and the IEEE importer)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    mixed = bool((feeder.switch != 0).any())  # the switch column only where it says something
    with open(folder / "houses.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["house", "phase", "switchable", "metered"] + (["switch"] if mixed else []))
        for h, hid in enumerate(feeder.houses):
            row = [hid, PHASE_NAMES[feeder.phase[h]], int(feeder.switchable[h]), int(feeder.metered[h])]
            w.writerow(row + ([SWITCH_NAMES[feeder.switch[h]]] if mixed else []))
    _write_matrix(folder / "load_kw.csv", feeder, feeder.load_kw, "%.3f")
    if write_pf:
        _write_matrix(folder / "pf.csv", feeder, feeder.pf, "%.3f")
    info: dict[str, Any] = {
        "name": feeder.name,
        "nominal_voltage_v": feeder.voltage_v,
        "transformer_meter": feeder.has_meter,
    }
    if feeder.source:
        info["source"] = feeder.source
    if meta:
        info.update(meta)
    (folder / "feeder.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")


def _write_matrix(path: Path, feeder: Feeder, data: NDArray[np.float64], fmt: str) -> None:
    with open(path, "w", newline="") as f:
        f.write("minute," + ",".join(feeder.houses) + "\n")
        for t in range(data.shape[1]):
            f.write("%d,%s\n" % (feeder.minutes[t], ",".join(fmt % v for v in data[:, t])))
