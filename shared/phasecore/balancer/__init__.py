"""The phase balancer: an online controller that decides which houses to move.

Called once per control period (typically a minute) by the transformer Pi, or
by a lead node where a site has no Pi. Sans-IO and deterministic: readings and
the time come in as arguments, a plan of moves comes out; nothing here reads a
clock, a meter or a socket, and the same calls give the same plan on
MicroPython and CPython.

    b = Balancer(Config(moves_per_day=4))
    b.add_node(7, "A")                        # a house with a phasekit node on phase A
    b.add_node(8, "ABC")                      # a three-phase house: seen, never moved
    b.reading(7, now_s, current_a=12.5, pf=0.93)
    ...
    moves = b.plan(now_s, meter=(ip_a, iq_a, ip_b, iq_b, ip_c, iq_c))
    for node_id, from_phase, to_phase in moves: ...   # phases 0/1/2 = A/B/C

Loads are described relative to their phase voltage by active and reactive
current, as in ``phasecore.metrics``; the meter gives the same per phase
(P/V and Q/V).

What it estimates. Per node, exponentially weighted means of its readings:
a fast one (``tau_s``, 20 min: follows an EV charge, ignores a kettle), a
slow one (``tau_slow_s``, 1 h: what the house draws over the next hours) and
a short one (``tau_short_s``, 5 min). The estimate it plans on is the fast
mean plus ``trend_weight`` times the latest reading's departure from the short
mean: a step in the load (a charger starting) shows at once, while a spike
that is already in the short mean counts less. That is the best linear
predictor of a house's next 15 minutes from these three that we found
(docs/balancer.md). With a transformer meter, the load on no node (street
lights, houses without a node, nodes that fell silent) is the meter minus the
fresh node readings, per phase, estimated the same ways; without a meter it
is unknown and left out.

What it minimises. The estimated squared neutral current -- the phasor sum of
the estimated phase currents, with power factor -- on both time scales, plus
that of the loads' common fluctuation (cloud over a street of rooftop solar):
``J = (|N_fast|^2 + w |N_slow|^2) / (1 + w) + w_c |N_fluct|^2``. With equal
power factors ``|N|^2`` is 3/2 times the sum of squared deviations of the
phase magnitudes, so lowering it lowers the current unbalance factor too. A
move must help now and over the next hour; chasing a bump that the slow
estimate does not share costs a relay operation for nothing.
``estimated_unbalance_a`` is ``sqrt(J)``.

How it decides. Greedy: each step takes the single move that lowers J most.
A move must lower ``sqrt(J)`` by ``min_move_gain_a`` plus ``budget_gain_a``
for each move the node already made in the last 24 h. A plan is carried out
only when its total gain is at least ``min_gain_a`` (and ``min_gain_frac`` of
the mean phase current), and such a plan has been available for
``persist_rounds`` rounds in a row (hysteresis: a spike does not move
anyone). Optionally (``refine_passes``, off by default: on the generated
feeders it lowered J per plan but not the day's neutral current) the plan
that is carried out is refined: each move is taken out in turn and replaced
by the best single move given the others, which finds pairs the greedy order
cannot see.

Switching budget. Besides the per-node limits, at most ``multi_share`` of
the registered nodes (rounded down: 24 of 55 at 0.45) may have moved twice
or more in the last 24 h. Every house may make one move; the repeated moves
go to a minority of houses, so the median house switches at most once a day
(multi_share < 0.5) while the balancer keeps the freedom to follow the
evening's loads. Once more than ``scarcity_from`` of the moves these limits
allow in 24 h are spent, every move's required gain is multiplied by
``1 + scarcity * (f - scarcity_from) / (1 - f)`` (f the spent share): the
last moves are kept for the largest unbalance instead of the next small one,
so a tight budget (one or two moves a day) does not run dry before the
evening peak.

Hard limits (``Config``): moves per round, minimum dwell per node, moves per
node in any 24 h window, the multi-move share. Offline, stale, locked-out,
non-switchable, three-phase and not yet warmed-up nodes are never moved. A
plan never increases the estimated unbalance it was computed for: it strictly
lowers J.

A planned move counts against the limits when it is planned, not when it is
acknowledged: a move that fails still used its budget, so a flapping relay
cannot run past the limits. The caller reports the phase a node is really on
with ``set_phase`` (or the ``phase`` argument of ``reading``).

Memory and speed: all per-node state lives in lists allocated once for
``capacity`` nodes; a round allocates only floats (boxed on MicroPython) and
a small tuple per search pass, unless it returns moves. A round is
O(moves_per_round x nodes), plus O(refine_passes x moves_per_round x nodes)
in a round that moves. On an ESP32 (single-precision floats) the estimates
keep about 1 mA of resolution at a few hundred amperes, ample for a PZEM-004T.

Parts: ``config`` (``Config``, ``BalancerError``, ``phase_index``, the
status codes), ``estimates`` (per-house estimates, trend, the meter's
residual, the common fluctuation), ``objective`` (the neutral current J and
what a move does to it), ``search`` (the greedy search under the limits).
``Balancer`` is the three parts over one set of node slots; import
everything from here (``from phasecore.balancer import Balancer, Config``).
"""

from phasecore.balancer.config import (
    DAY_S,
    LOCKED,
    MECHANICAL,
    OFFLINE,
    ONLINE,
    SOLID_STATE,
    STALE,
    STATUS_NAMES,
    SWITCH_KINDS,
    THREE_PHASE,
    BalancerError,
    Config,
    phase_index,
    switch_kind,
)
from phasecore.balancer.estimates import Estimates
from phasecore.balancer.objective import Objective
from phasecore.balancer.search import Search
from phasecore.errors import quote

__all__ = (
    "Balancer",
    "Config",
    "BalancerError",
    "ONLINE",
    "STALE",
    "OFFLINE",
    "LOCKED",
    "THREE_PHASE",
    "phase_index",
    "DAY_S",
    "MECHANICAL",
    "SOLID_STATE",
    "SWITCH_KINDS",
    "switch_kind",
)


class Balancer(Estimates, Objective, Search):
    """Online phase balancer for up to ``capacity`` nodes (see the module docstring)."""

    def __init__(self, config=None, capacity=256):
        if config is None:
            config = Config()
        if not isinstance(config, Config):
            raise BalancerError("config must be a balancer.Config, got %s" % (quote(type(config).__name__),))
        if not isinstance(capacity, int) or not 1 <= capacity <= 4096:
            raise BalancerError("capacity must be an integer 1..4096, got %s" % (quote(capacity),))
        self.config = config
        self.capacity = capacity
        self._slot = {}
        # Removed nodes that moved lately: id -> (last move, move times, ring head),
        # so a node that leaves and comes back does not get a fresh budget.
        self._gone = {}
        n = capacity
        self._ids = [None] * n
        self._phase = bytearray(n)
        self._switch = bytearray(n)
        self._status = bytearray(n)
        self._kind = bytearray(n)  # MECHANICAL or SOLID_STATE: which limits apply
        self._init_estimates(n)
        self._init_objective()
        self._init_search(n, config)
        self.estimated_unbalance_a = 0.0  # sqrt(J) before the last plan
        self.planned_unbalance_a = 0.0  # sqrt(J) after the plan's moves (= before if none)
        self.estimated_neutral_a = 0.0  # |N_fast| before the last plan
        self.estimated_cuf = 0.0  # CUF of the fast estimate before the last plan

    # -- nodes ------------------------------------------------------------

    def add_node(self, node_id, phase, switchable=True, kind=MECHANICAL):
        """Register a node on ``phase`` ("A", "B", "C", "ABC" or 0..3). Three-phase nodes never move.

        ``kind`` is the node's switch hardware (MECHANICAL or SOLID_STATE, or
        their names): it picks the limits the node is held to.
        """
        if node_id is None:
            raise BalancerError("node id must not be None")
        if self._lookup(node_id) is not None:
            raise BalancerError("node %s is already registered" % (quote(node_id),))
        p = phase_index(phase)
        kd = switch_kind(kind)
        ids = self._ids
        i = 0
        while i < self.capacity and ids[i] is not None:
            i += 1
        if i == self.capacity:
            raise BalancerError("balancer full: %d nodes (raise capacity)" % self.capacity)
        self._slot[node_id] = i
        ids[i] = node_id
        self._phase[i] = p
        self._switch[i] = 1 if (switchable and p != THREE_PHASE) else 0
        self._status[i] = ONLINE
        self._kind[i] = kd
        self._reset_estimates(i)
        self._reset_budget(i, self._gone.pop(node_id, None))
        return i

    def remove_node(self, node_id):
        """Forget a node (it left the feeder); its load stays visible through the meter.

        Its recent moves are kept: added again within a day (or its dwell),
        it is held to the same dwell and 24 h budget as if it had stayed.
        """
        i = self._index(node_id)
        if self._last_move[i] is not None:
            self._gone[node_id] = (self._last_move[i], self._recent_moves(i))
        del self._slot[node_id]
        self._ids[i] = None
        self._ring[i] = None

    def set_status(self, node_id, status):
        """ONLINE, STALE, OFFLINE or LOCKED (locked out by the node's own safety layer)."""
        if not isinstance(status, int) or isinstance(status, bool) or status not in (ONLINE, STALE, OFFLINE, LOCKED):
            raise BalancerError("status %s is not ONLINE, STALE, OFFLINE or LOCKED" % (quote(status),))
        self._status[self._index(node_id)] = status

    def set_phase(self, node_id, phase):
        """Record the phase a node reports it is really on (after a move, or a failed one)."""
        i = self._index(node_id)
        p = phase_index(phase)
        if (p == THREE_PHASE) != (self._phase[i] == THREE_PHASE):
            raise BalancerError("node %s cannot change between single- and three-phase" % (quote(node_id),))
        self._phase[i] = p

    def set_switchable(self, node_id, switchable):
        i = self._index(node_id)
        self._switch[i] = 1 if (switchable and self._phase[i] != THREE_PHASE) else 0

    def set_switch_kind(self, node_id, kind):
        """The node's switch hardware as it reports it (MECHANICAL or SOLID_STATE, or their names).

        Its recent moves go on counting against the new kind's limits (the
        newest ones, as many as the new kind's 24 h budget can hold).
        """
        i = self._index(node_id)
        kd = switch_kind(kind)
        if kd != self._kind[i]:
            moves = self._recent_moves(i)
            self._kind[i] = kd
            self._reset_budget(i, (self._last_move[i], moves))

    def switch_kind(self, node_id):
        """The node's switch kind, MECHANICAL (0) or SOLID_STATE (1)."""
        return self._kind[self._index(node_id)]

    def nodes(self):
        """Registered node ids in slot order (the order plans are searched in)."""
        return [x for x in self._ids if x is not None]

    def node(self, node_id):
        """A node's state as a dict (for logs and tests; allocates)."""
        i = self._index(node_id)
        return {
            "phase": self._phase[i],
            "kind": SWITCH_KINDS[self._kind[i]],
            "switchable": bool(self._switch[i]),
            "status": STATUS_NAMES[self._status[i]],
            "fast": (self._fp[i], self._fq[i]),
            "slow": (self._sp[i], self._sq[i]),
            "short": (self._ep[i], self._eq[i]),
            "last_reading_s": self._lt[i],
            "first_reading_s": self._t0[i],
            "last_move_s": self._last_move[i],
            "move_times_s": self._recent_moves(i),
        }

    def _lookup(self, node_id):
        try:
            return self._slot.get(node_id)
        except TypeError:
            raise BalancerError("node id %s is not hashable" % (quote(node_id),))

    def _index(self, node_id):
        i = self._lookup(node_id)
        if i is None:
            raise BalancerError("unknown node %s" % (quote(node_id),))
        return i

    # -- planning ---------------------------------------------------------

    def plan(self, now_s, meter=None):
        """Decide this round's moves: a list of (node_id, from_phase, to_phase), usually empty.

        ``meter`` is the transformer meter's per-phase active and reactive
        current (P/V and Q/V, A) as six numbers (A then B then C), or None when
        the site has no meter or it did not answer this round.
        """
        if not isinstance(now_s, int):
            raise BalancerError("plan: time %s is not an integer number of seconds" % (quote(now_s),))
        if self._pt is not None and now_s < self._pt:
            raise BalancerError("plan at %s s is older than the last round at %s s" % (quote(now_s), quote(self._pt)))
        if self._gone:
            self._forget_gone(now_s)
        rdv = self._rdv
        rdv[0] = rdv[1] = rdv[2] = 0.0
        if meter is not None:
            self._update_residual(now_s, meter)
        self._update_fluctuation(now_s)
        self._planning_estimates()
        return self._search(now_s, self._neutral_state(now_s))
