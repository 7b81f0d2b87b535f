"""The balancer's configuration, its error and the codes of its API: what every part of the balancer shares.

``Config`` holds the operator's limits and the tuning (each field with a
default and a lower bound, checked at construction); ``BalancerError`` is
what every part raises on bad input; ``phase_index`` turns "A".."C", "ABC" or
an index into the balancer's phase index: 0, 1, 2 are phases A, B, C as on
the wire (``phasecore.codes``), ``THREE_PHASE`` (3) a three-phase connection,
seen but never moved. Import them from ``phasecore.balancer``.
"""

from phasecore.codes import PHASE_A, PHASE_B, PHASE_C
from phasecore.errors import PhasecoreError, quote

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


ONLINE = const(0)
STALE = const(1)
OFFLINE = const(2)
LOCKED = const(3)
STATUS_NAMES = ("online", "stale", "offline", "locked")

THREE_PHASE = const(3)
DAY_S = const(86400)

# Switch kinds: what moves a node's house between phases (docs/balancer.md,
# "Switch kinds"). A node's kind picks its limits from Config: the plain
# fields for MECHANICAL, the ``ss_`` fields for SOLID_STATE.
MECHANICAL = const(0)  # relays or contactors: break-before-make, seconds of dead time, contact wear
SOLID_STATE = const(1)  # thyristors/triacs: zero-cross transfer, at most a half-cycle gap, no wear
SWITCH_KINDS = ("mechanical", "solid-state")
MAX_CURRENT_A = 2000.0  # a reading beyond +-this is not a house's
MAX_MOVES_PER_ROUND = const(64)  # the largest plan any config allows


class BalancerError(PhasecoreError):
    """Bad configuration, unknown node, or an implausible reading given to the balancer."""


def switch_kind(kind):
    """MECHANICAL (0) or SOLID_STATE (1) from "mechanical", "solid-state" or the index."""
    if isinstance(kind, int) and not isinstance(kind, bool) and 0 <= kind < len(SWITCH_KINDS):
        return kind
    if isinstance(kind, str):
        k = kind.lower().replace("_", "-")
        for i in range(len(SWITCH_KINDS)):
            if SWITCH_KINDS[i] == k:
                return i
    raise BalancerError("switch kind %s is not mechanical or solid-state" % (quote(kind),))


def phase_index(phase):
    """0/1/2 for A/B/C and 3 for a three-phase connection, from "A".."C", "ABC" or the index."""
    if isinstance(phase, int) and not isinstance(phase, bool) and 0 <= phase <= 3:
        return phase
    if isinstance(phase, str):
        p = phase.upper()
        if p == "A":
            return PHASE_A
        if p == "B":
            return PHASE_B
        if p == "C":
            return PHASE_C
        if p == "ABC":
            return THREE_PHASE
    raise BalancerError("phase %s is not A, B, C or ABC" % (quote(phase),))


# (name, default, lowest allowed, type)
_FIELDS = (
    ("moves_per_round", 2, 0, int),
    ("min_dwell_s", 3600, 0, int),
    ("moves_per_day", 4, 0, int),
    ("multi_share", 0.45, 0.0, float),
    ("persist_rounds", 2, 1, int),
    ("tau_s", 1200, 1, int),
    ("tau_slow_s", 3600, 1, int),
    ("tau_short_s", 300, 1, int),
    ("trend_weight", 0.4, 0.0, float),
    ("slow_weight", 1.0, 0.0, float),
    ("fluct_weight", 1.0, 0.0, float),
    ("warmup_s", 600, 0, int),
    ("stale_s", 180, 1, int),
    ("min_gain_a", 2.0, 0.0, float),
    ("min_gain_frac", 0.0, 0.0, float),
    ("min_move_gain_a", 2.0, 0.0, float),
    ("budget_gain_a", 1.0, 0.0, float),
    ("refine_passes", 0, 0, int),
    ("scarcity", 0.5, 0.0, float),
    ("scarcity_from", 0.3, 0.0, float),
    ("default_pf", 0.95, 0.05, float),
    # Solid-state nodes (SOLID_STATE): their own limits and gates (docs/balancer.md).
    ("ss_min_dwell_s", 120, 0, int),
    ("ss_moves_per_day", 96, 0, int),
    ("ss_min_move_gain_a", 0.5, 0.0, float),
    ("ss_budget_gain_a", 0.0, 0.0, float),
    ("ss_min_gain_a", 0.5, 0.0, float),
    ("ss_persist_rounds", 1, 1, int),
    ("ss_follow_reading", 1, 0, int),
)

MAX_MOVES_PER_DAY = const(1440)  # one a minute: the most any config allows


class Config:
    """Operator limits and tuning of the balancer; every field has a default.

    moves_per_round   most moves in one plan
    min_dwell_s       a node stays at least this long on a phase after a move
    moves_per_day     most moves of one node in any 24 h window (sliding); a
                      running Balancer caps it at the value it was built with
    multi_share       most nodes, as a share of the registered ones, that may
                      have moved twice or more in 24 h (below 0.5: the median
                      house switches at most once a day)
    persist_rounds    hysteresis: rounds in a row a worthwhile plan must exist
    tau_s             time constant of the fast load estimate (EWMA), s
    tau_slow_s        time constant of the slow load estimate, s
    tau_short_s       time constant of the short estimate behind the trend term, s
    trend_weight      weight of (latest reading - short estimate) in the planning estimate
    slow_weight       weight of the slow estimate's neutral current in J
    fluct_weight      weight of the common-fluctuation neutral current in J
    warmup_s          history a node needs before it may be moved, s
    stale_s           a node silent longer than this counts as stale, s
    min_gain_a        a plan must lower sqrt(J) at least this much (A) ...
    min_gain_frac     ... and at least this share of the mean phase current
    min_move_gain_a   every single move must lower sqrt(J) this much (A) ...
    budget_gain_a     ... plus this much for each move the node made in 24 h
    refine_passes     passes that re-choose each move of a plan given the others
    scarcity          how steeply the moves' required gain rises as the 24 h budget runs out ...
    scarcity_from     ... once more than this share of it is spent
    default_pf        power factor assumed where a reading has none

    Solid-state nodes (switch kind SOLID_STATE) take these instead of the
    plain limits above; everything else is shared:

    ss_min_dwell_s      a solid-state node stays at least this long on a phase
    ss_moves_per_day    most moves of a solid-state node in any 24 h window
    ss_min_move_gain_a  every move of a solid-state node must lower sqrt(J) this much ...
    ss_budget_gain_a    ... plus this much for each move it made in 24 h
    ss_min_gain_a       a plan of solid-state moves only must gain this much ...
    ss_persist_rounds   ... for this many rounds in a row
    ss_follow_reading   1: a solid-state node is planned on its latest reading in
                        both terms of J (it can be moved again within minutes, so
                        it is placed for the next minutes); 0: on the estimates
                        mechanical nodes are planned on
    The multi-move share limits mechanical nodes only: a solid-state move is
    a gap of at most one half-cycle, which household equipment rides through
    (IEC 61000-4-11), and wears nothing.
    """

    def __init__(self, **kwargs):
        for name, default, lowest, typ in _FIELDS:
            value = kwargs.pop(name, default)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise BalancerError("config %s: expected a number, got %s" % (name, quote(value)))
            if typ is int and not isinstance(value, int):
                raise BalancerError("config %s: expected an integer, got %s" % (name, quote(value)))
            if value != value or value < lowest or value > 1e9:
                raise BalancerError("config %s: %s outside %s..1e9" % (name, quote(value), quote(lowest)))
            setattr(self, name, typ(value))
        if self.default_pf > 1.0:
            raise BalancerError("config default_pf: %s is above 1" % (quote(self.default_pf),))
        if self.multi_share > 1.0:
            raise BalancerError("config multi_share: %s is above 1" % (quote(self.multi_share),))
        if self.scarcity_from >= 1.0:
            raise BalancerError("config scarcity_from: %s is not below 1" % (quote(self.scarcity_from),))
        if self.refine_passes > 8:
            raise BalancerError("config refine_passes: %s is above 8" % (quote(self.refine_passes),))
        if self.moves_per_round > MAX_MOVES_PER_ROUND:
            raise BalancerError(
                "config moves_per_round: %s is above %d" % (quote(self.moves_per_round), MAX_MOVES_PER_ROUND)
            )
        for name in ("moves_per_day", "ss_moves_per_day"):
            if getattr(self, name) > MAX_MOVES_PER_DAY:
                raise BalancerError("config %s: %s is above %d" % (name, quote(getattr(self, name)), MAX_MOVES_PER_DAY))
        if self.ss_follow_reading > 1:
            raise BalancerError("config ss_follow_reading: %s is not 0 or 1" % (quote(self.ss_follow_reading),))
        if kwargs:
            raise BalancerError("config: unknown key(s) %s" % ", ".join(sorted(kwargs)))

    def as_dict(self):
        d = {}
        for name, _, _, _ in _FIELDS:
            d[name] = getattr(self, name)
        return d
