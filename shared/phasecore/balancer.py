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
"""

import math

from phasecore.errors import PhasecoreError

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

__all__ = ("Balancer", "Config", "BalancerError", "ONLINE", "STALE", "OFFLINE", "LOCKED",
           "THREE_PHASE", "phase_index", "DAY_S")

ONLINE = const(0)
STALE = const(1)
OFFLINE = const(2)
LOCKED = const(3)
_STATUS_NAMES = ("online", "stale", "offline", "locked")

THREE_PHASE = const(3)
DAY_S = const(86400)
_S = 0.8660254037844386  # sin 120 deg
_MAX_CURRENT_A = 2000.0
_MAX_MOVES_PER_ROUND = const(64)
_NO_MOVES = ()


class BalancerError(PhasecoreError):
    """Bad configuration, unknown node, or an implausible reading given to the balancer."""


def phase_index(phase):
    """0/1/2 for A/B/C and 3 for a three-phase connection, from "A".."C", "ABC" or the index."""
    if isinstance(phase, int) and not isinstance(phase, bool) and 0 <= phase <= 3:
        return phase
    if isinstance(phase, str):
        p = phase.upper()
        if p == "A":
            return 0
        if p == "B":
            return 1
        if p == "C":
            return 2
        if p == "ABC":
            return THREE_PHASE
    raise BalancerError("phase %r is not A, B, C or ABC" % (phase,))


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
)


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
    """

    def __init__(self, **kwargs):
        for name, default, lowest, typ in _FIELDS:
            value = kwargs.pop(name, default)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise BalancerError("config %s: expected a number, got %r" % (name, value))
            if typ is int and not isinstance(value, int):
                raise BalancerError("config %s: expected an integer, got %r" % (name, value))
            if value != value or value < lowest or value > 1e9:
                raise BalancerError("config %s: %r outside %r..1e9" % (name, value, lowest))
            setattr(self, name, typ(value))
        if self.default_pf > 1.0:
            raise BalancerError("config default_pf: %r is above 1" % (self.default_pf,))
        if self.multi_share > 1.0:
            raise BalancerError("config multi_share: %r is above 1" % (self.multi_share,))
        if self.scarcity_from >= 1.0:
            raise BalancerError("config scarcity_from: %r is not below 1" % (self.scarcity_from,))
        if self.refine_passes > 8:
            raise BalancerError("config refine_passes: %r is above 8" % (self.refine_passes,))
        if self.moves_per_round > _MAX_MOVES_PER_ROUND:
            raise BalancerError("config moves_per_round: %r is above %d" % (self.moves_per_round, _MAX_MOVES_PER_ROUND))
        if self.moves_per_day > 255:
            raise BalancerError("config moves_per_day: %r is above 255" % (self.moves_per_day,))
        if kwargs:
            raise BalancerError("config: unknown key(s) %s" % ", ".join(sorted(kwargs)))

    def as_dict(self):
        d = {}
        for name, _, _, _ in _FIELDS:
            d[name] = getattr(self, name)
        return d


class Balancer:
    """Online phase balancer for up to ``capacity`` nodes (see the module docstring)."""

    def __init__(self, config=None, capacity=256):
        if config is None:
            config = Config()
        if not isinstance(config, Config):
            raise BalancerError("config must be a balancer.Config, got %r" % (type(config).__name__,))
        if not isinstance(capacity, int) or not 1 <= capacity <= 4096:
            raise BalancerError("capacity must be an integer 1..4096, got %r" % (capacity,))
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
        self._fp = [0.0] * n          # fast estimate: active current (A, signed)
        self._ep = [0.0] * n          # short estimate (tau_short_s), active
        self._eq = [0.0] * n          # short estimate, reactive
        self._xp = [0.0] * n          # scratch: planning estimate, active
        self._xq = [0.0] * n          # scratch: planning estimate, reactive
        self._fq = [0.0] * n          # fast estimate: reactive current (A)
        self._sp = [0.0] * n          # slow estimate, active
        self._sq = [0.0] * n          # slow estimate, reactive
        self._cv = [0.0] * n          # covariance of the node's fluctuation with the feeder's (A^2)
        self._dv = [0.0] * n          # this round's fluctuation (reading - fast estimate), active
        self._lp = [0.0] * n          # last reading, active
        self._lq = [0.0] * n          # last reading, reactive
        self._lt = [None] * n         # time of the last reading
        self._t0 = [None] * n         # time of the first reading
        self._last_move = [None] * n
        k = config.moves_per_day if config.moves_per_day > 0 else 1
        self._k = k
        self._ring = [None] * (n * k)  # times of each node's last k moves (a ring per node)
        self._head = bytearray(n)
        # Load on no fresh node, per phase: fast and slow, active and reactive.
        self._res = [0.0] * 12
        self._rsh = [0.0] * 6          # residual's short estimate (ip, iq per phase)
        self._rtr = [0.0] * 6          # residual's latest value minus its short estimate
        self._rcv = [0.0, 0.0, 0.0]   # the residual's covariance with the feeder's fluctuation, per phase
        self._gvar = 0.0              # variance of the feeder's fluctuation (A^2)
        self._rdv = [0.0, 0.0, 0.0]   # scratch: the residual's fluctuation this round
        self._rt = None                # time of the last meter reading
        self._pt = None                # time of the last plan round
        self._persist = 0
        self._tot = [0.0] * 12         # scratch: estimated phase totals (same layout as _res)
        self._mov = bytearray(n)       # scratch: movable this round
        self._need = [0.0] * n         # scratch: gain each node's move must bring
        # Sized for the largest plan any config allows, so moves_per_round may
        # be changed on a running balancer.
        self._pick_i = [0] * _MAX_MOVES_PER_ROUND
        self._pick_q = bytearray(_MAX_MOVES_PER_ROUND)
        self._pick_m = bytearray(_MAX_MOVES_PER_ROUND)
        self._st = [0.0] * 6           # scratch: neutral state (fast, slow, fluctuation; re, im)
        self.estimated_unbalance_a = 0.0   # sqrt(J) before the last plan
        self.planned_unbalance_a = 0.0     # sqrt(J) after the plan's moves (= before if none)
        self.estimated_neutral_a = 0.0     # |N_fast| before the last plan
        self.estimated_cuf = 0.0           # CUF of the fast estimate before the last plan

    # -- nodes ------------------------------------------------------------

    def add_node(self, node_id, phase, switchable=True):
        """Register a node on ``phase`` ("A", "B", "C", "ABC" or 0..3). Three-phase nodes never move."""
        if node_id is None:
            raise BalancerError("node id must not be None")
        if self._lookup(node_id) is not None:
            raise BalancerError("node %r is already registered" % (node_id,))
        p = phase_index(phase)
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
        self._fp[i] = self._fq[i] = self._sp[i] = self._sq[i] = self._lp[i] = self._lq[i] = 0.0
        self._ep[i] = self._eq[i] = 0.0
        self._cv[i] = self._dv[i] = 0.0
        self._lt[i] = self._t0[i] = self._last_move[i] = None
        k = self._k
        for j in range(i * k, i * k + k):
            self._ring[j] = None
        self._head[i] = 0
        gone = self._gone.pop(node_id, None)
        if gone is not None:
            self._last_move[i] = gone[0]
            for j in range(k):
                self._ring[i * k + j] = gone[1][j]
            self._head[i] = gone[2]
        return i

    def remove_node(self, node_id):
        """Forget a node (it left the feeder); its load stays visible through the meter.

        Its recent moves are kept: added again within a day (or its dwell),
        it is held to the same dwell and 24 h budget as if it had stayed.
        """
        i = self._index(node_id)
        if self._last_move[i] is not None:
            k = self._k
            self._gone[node_id] = (self._last_move[i], self._ring[i * k:i * k + k], self._head[i])
        del self._slot[node_id]
        self._ids[i] = None

    def set_status(self, node_id, status):
        """ONLINE, STALE, OFFLINE or LOCKED (locked out by the node's own safety layer)."""
        if not isinstance(status, int) or isinstance(status, bool) or \
                status not in (ONLINE, STALE, OFFLINE, LOCKED):
            raise BalancerError("status %r is not ONLINE, STALE, OFFLINE or LOCKED" % (status,))
        self._status[self._index(node_id)] = status

    def set_phase(self, node_id, phase):
        """Record the phase a node reports it is really on (after a move, or a failed one)."""
        i = self._index(node_id)
        p = phase_index(phase)
        if (p == THREE_PHASE) != (self._phase[i] == THREE_PHASE):
            raise BalancerError("node %r cannot change between single- and three-phase" % (node_id,))
        self._phase[i] = p

    def set_switchable(self, node_id, switchable):
        i = self._index(node_id)
        self._switch[i] = 1 if (switchable and self._phase[i] != THREE_PHASE) else 0

    def nodes(self):
        """Registered node ids in slot order (the order plans are searched in)."""
        return [x for x in self._ids if x is not None]

    def node(self, node_id):
        """A node's state as a dict (for logs and tests; allocates)."""
        i = self._index(node_id)
        k = self._k
        return {
            "phase": self._phase[i], "switchable": bool(self._switch[i]),
            "status": _STATUS_NAMES[self._status[i]],
            "fast": (self._fp[i], self._fq[i]), "slow": (self._sp[i], self._sq[i]),
            "short": (self._ep[i], self._eq[i]),
            "last_reading_s": self._lt[i], "first_reading_s": self._t0[i],
            "last_move_s": self._last_move[i],
            "move_times_s": sorted([t for t in self._ring[i * k:(i + 1) * k] if t is not None]),
        }

    def _lookup(self, node_id):
        try:
            return self._slot.get(node_id)
        except TypeError:
            raise BalancerError("node id %r is not hashable" % (node_id,))

    def _index(self, node_id):
        i = self._lookup(node_id)
        if i is None:
            raise BalancerError("unknown node %r" % (node_id,))
        return i

    def _forget_gone(self, now_s):
        """Drop removed nodes whose last move no longer counts against any limit."""
        keep_s = DAY_S if DAY_S > self.config.min_dwell_s else self.config.min_dwell_s
        old = [node for node, gone in self._gone.items() if now_s - gone[0] >= keep_s]
        for node in old:
            del self._gone[node]

    # -- readings ---------------------------------------------------------

    def reading(self, node_id, now_s, current_a, pf=None, phase=None):
        """Feed one reading: current in A (signed, negative when the house exports).

        For a three-phase node give the current of one phase (its load split
        evenly). ``pf`` is the power factor (lagging, 0 < pf <= 1) or None for
        the configured default; ``phase`` the phase the node reports being on.
        """
        i = self._index(node_id)
        if not isinstance(current_a, (int, float)) or current_a != current_a or \
                not -_MAX_CURRENT_A < current_a < _MAX_CURRENT_A:
            raise BalancerError("node %r: current %r A not a finite value within +-%d A"
                                % (node_id, current_a, _MAX_CURRENT_A))
        if pf is None:
            pf = self.config.default_pf
        elif not isinstance(pf, (int, float)) or not 0.0 < pf <= 1.0:
            raise BalancerError("node %r: power factor %r outside (0, 1]" % (node_id, pf))
        if not isinstance(now_s, int):
            raise BalancerError("node %r: time %r is not an integer number of seconds" % (node_id, now_s))
        last = self._lt[i]
        if last is not None and now_s < last:
            raise BalancerError("node %r: reading at %r s is older than the last one at %r s"
                                % (node_id, now_s, last))
        if phase is not None:
            self.set_phase(node_id, phase)
        ip = current_a * pf
        iq = current_a * math.sqrt(1.0 - pf * pf)
        if last is None:
            self._fp[i] = self._sp[i] = self._ep[i] = ip
            self._fq[i] = self._sq[i] = self._eq[i] = iq
            self._t0[i] = now_s
        else:
            dt = now_s - last
            self._dv[i] = ip - self._fp[i]
            # First-order EWMA step for an irregular interval: dt / (tau + dt).
            a = dt / (self.config.tau_s + dt)
            self._fp[i] += a * (ip - self._fp[i])
            self._fq[i] += a * (iq - self._fq[i])
            a = dt / (self.config.tau_slow_s + dt)
            self._sp[i] += a * (ip - self._sp[i])
            self._sq[i] += a * (iq - self._sq[i])
            a = dt / (self.config.tau_short_s + dt)
            self._ep[i] += a * (ip - self._ep[i])
            self._eq[i] += a * (iq - self._eq[i])
        self._lp[i] = ip
        self._lq[i] = iq
        self._lt[i] = now_s

    def _fresh(self, i, now_s):
        t = self._lt[i]
        return self._status[i] == ONLINE and t is not None and now_s - t <= self.config.stale_s

    def _moves_24h(self, i, now_s):
        k = self._k
        n = 0
        for j in range(i * k, i * k + k):
            t = self._ring[j]
            if t is not None and now_s - t < DAY_S:
                n += 1
        return n

    def _movable(self, i, now_s):
        """Whether node slot i may move now, its 24 h budget aside."""
        if not self._switch[i] or self._phase[i] == THREE_PHASE or not self._fresh(i, now_s):
            return False
        cfg = self.config
        t0 = self._t0[i]
        if t0 is None or now_s - t0 < cfg.warmup_s:
            return False
        last = self._last_move[i]
        return last is None or now_s - last >= cfg.min_dwell_s

    # -- planning ---------------------------------------------------------

    def plan(self, now_s, meter=None):
        """Decide this round's moves: a list of (node_id, from_phase, to_phase), usually empty.

        ``meter`` is the transformer meter's per-phase active and reactive
        current (P/V and Q/V, A) as six numbers (A then B then C), or None when
        the site has no meter or it did not answer this round.
        """
        if not isinstance(now_s, int):
            raise BalancerError("plan: time %r is not an integer number of seconds" % (now_s,))
        if self._pt is not None and now_s < self._pt:
            raise BalancerError("plan at %r s is older than the last round at %r s" % (now_s, self._pt))
        cfg = self.config
        if self._gone:
            self._forget_gone(now_s)
        rdv = self._rdv
        rdv[0] = rdv[1] = rdv[2] = 0.0
        if meter is not None:
            self._update_residual(now_s, meter)
        self._update_fluctuation(now_s)
        n = self.capacity
        ids = self._ids
        phase = self._phase
        # Planning estimate: the fast mean plus trend_weight times the latest
        # reading's departure from the short mean (a step shows at once, a
        # spike already fading counts less).
        fp = self._xp
        fq = self._xq
        c = cfg.trend_weight
        for i in range(n):
            if ids[i] is not None:
                fp[i] = self._fp[i] + c * (self._lp[i] - self._ep[i])
                fq[i] = self._fq[i] + c * (self._lq[i] - self._eq[i])
        sp = self._sp
        sq = self._sq
        cv = self._cv
        tot = self._tot
        use_res = self._rt is not None
        res = self._res
        for j in range(12):
            tot[j] = res[j] if use_res else 0.0
        if use_res:
            rtr = self._rtr
            for p in range(3):
                tot[4 * p] += c * rtr[2 * p]
                tot[4 * p + 1] += c * rtr[2 * p + 1]
        rcv = self._rcv
        gsd = math.sqrt(self._gvar)
        inv = 1.0 / gsd if gsd > 1e-6 else 0.0
        # Common-fluctuation share per phase, A: cov(x, g) / sd(g).
        ca = rcv[0] * inv if use_res else 0.0
        cb = rcv[1] * inv if use_res else 0.0
        cc = rcv[2] * inv if use_res else 0.0
        # Estimated phase totals; layout tot[4*p + (fast ip, fast iq, slow ip, slow iq)].
        # Without a meter a silent node's last estimate is the best guess of its
        # load; with one, that load is already in the residual.
        for i in range(n):
            if ids[i] is None or self._lt[i] is None:
                continue
            if use_res and not self._fresh(i, now_s):
                continue
            p = phase[i]
            e = cv[i] * inv
            if p == THREE_PHASE:
                for j in (0, 4, 8):
                    tot[j] += fp[i]
                    tot[j + 1] += fq[i]
                    tot[j + 2] += sp[i]
                    tot[j + 3] += sq[i]
                ca += e
                cb += e
                cc += e
            else:
                j = 4 * p
                tot[j] += fp[i]
                tot[j + 1] += fq[i]
                tot[j + 2] += sp[i]
                tot[j + 3] += sq[i]
                if p == 0:
                    ca += e
                elif p == 1:
                    cb += e
                else:
                    cc += e
        s = _S
        # Neutral phasors of the fast and slow estimates and of the common
        # fluctuation (metrics.neutral_rel, expanded).
        nfr = tot[0] - 0.5 * (tot[4] + tot[8]) - s * (tot[5] - tot[9])
        nfi = -tot[1] + 0.5 * (tot[5] + tot[9]) + s * (tot[8] - tot[4])
        nsr = tot[2] - 0.5 * (tot[6] + tot[10]) - s * (tot[7] - tot[11])
        nsi = -tot[3] + 0.5 * (tot[7] + tot[11]) + s * (tot[10] - tot[6])
        ncr = ca - 0.5 * (cb + cc)
        nci = s * (cc - cb)
        w = cfg.slow_weight
        wc = cfg.fluct_weight
        norm = 1.0 / (1.0 + w)
        cost0 = (nfr * nfr + nfi * nfi + w * (nsr * nsr + nsi * nsi)) * norm + wc * (ncr * ncr + nci * nci)
        self.estimated_neutral_a = math.sqrt(nfr * nfr + nfi * nfi)
        ia = math.sqrt(tot[0] * tot[0] + tot[1] * tot[1])
        ib = math.sqrt(tot[4] * tot[4] + tot[5] * tot[5])
        ic = math.sqrt(tot[8] * tot[8] + tot[9] * tot[9])
        mean = (ia + ib + ic) / 3.0
        dev = max(abs(ia - mean), abs(ib - mean), abs(ic - mean))
        self.estimated_cuf = dev / (mean if mean > 1.0 else 1.0)
        root0 = math.sqrt(cost0)
        self.estimated_unbalance_a = self.planned_unbalance_a = root0

        mov = self._mov
        need = self._need
        any_movable = False
        # A house that moved twice or more in 24 h is a "multi" house: at most
        # multi_share of the registered nodes may be one, so the median house
        # switches at most once a day whatever the load does.
        registered = 0
        multi = 0
        spent = 0
        switchable = 0
        # The move-time rings hold the moves_per_day the balancer was built
        # with: a value raised later on its config is capped there.
        per_day = cfg.moves_per_day if cfg.moves_per_day < self._k else self._k
        for i in range(n):
            if ids[i] is None:
                mov[i] = 0
                continue
            registered += 1
            used = self._moves_24h(i, now_s)
            spent += used
            if self._switch[i]:
                switchable += 1
            if used >= 2:
                multi += 1
            if used >= per_day or not self._movable(i, now_s):
                mov[i] = 0
            else:
                mov[i] = 2 if used == 1 else 1   # 2: its move would make it a multi house
                need[i] = cfg.min_move_gain_a + cfg.budget_gain_a * used
                any_movable = True
        multi_cap = int(cfg.multi_share * registered)
        if cfg.scarcity > 0.0 and any_movable:
            # Scarcity: once more than scarcity_from of the moves the limits
            # allow in 24 h are spent, every move must bring more, rising
            # without bound as the budget runs out -- the last moves are kept
            # for the largest unbalance, not spent on the next small one.
            extra = multi_cap if multi_cap < switchable else switchable
            budget = switchable + extra * (per_day - 1)
            f = spent / budget if budget > 0 else 1.0
            if f > cfg.scarcity_from:
                if f > 0.95:
                    f = 0.95
                scale = 1.0 + cfg.scarcity * (f - cfg.scarcity_from) / (1.0 - f)
                for i in range(n):
                    if mov[i]:
                        need[i] *= scale
        if not any_movable or cfg.moves_per_round == 0:
            self._persist = 0
            return _NO_MOVES

        # Greedy: each step takes the single move that lowers J most among the
        # moves that each bring their node's required gain.
        st = self._st
        st[0] = nfr
        st[1] = nfi
        st[2] = nsr
        st[3] = nsi
        st[4] = ncr
        st[5] = nci
        pick_i = self._pick_i
        pick_q = self._pick_q
        pick_m = self._pick_m
        cost = cost0
        steps = 0
        while steps < cfg.moves_per_round:
            best, i, q = self._scan(st, cost, inv, multi < multi_cap)
            if i < 0:
                break
            self._apply(st, i, phase[i], q, inv)
            cost = best
            pick_i[steps] = i
            pick_q[steps] = q
            pick_m[steps] = mov[i]
            if mov[i] == 2:
                multi += 1
            mov[i] = 0
            steps += 1
        root = math.sqrt(cost)
        gain = root0 - root
        want = cfg.min_gain_a
        if cfg.min_gain_frac * mean > want:
            want = cfg.min_gain_frac * mean
        if steps == 0 or gain < want:
            self._persist = 0
            return _NO_MOVES
        self._persist += 1
        if self._persist < cfg.persist_rounds:
            return _NO_MOVES
        self._persist = 0
        # Refinement of the plan that is carried out (the greedy plan decided
        # that one is due): take each chosen move out in turn and put back the
        # best single move given the others -- a pair the greedy order cannot
        # see, e.g. two houses that only together fit the gap. Never raises J.
        for _ in range(cfg.refine_passes if steps > 1 else 0):
            changed = False
            for j in range(steps):
                i = pick_i[j]
                q = pick_q[j]
                self._apply(st, i, q, phase[i], inv)   # undo
                mov[i] = pick_m[j]
                if pick_m[j] == 2:
                    multi -= 1
                wo = self._cost(st)
                best, i2, q2 = self._scan(st, wo, inv, multi < multi_cap)
                if i2 < 0 or best > cost - 1e-9:
                    i2 = i
                    q2 = q
                    best = cost
                elif i2 != i or q2 != q:
                    changed = True
                self._apply(st, i2, phase[i2], q2, inv)
                cost = best
                pick_i[j] = i2
                pick_q[j] = q2
                pick_m[j] = mov[i2]
                if mov[i2] == 2:
                    multi += 1
                mov[i2] = 0
            if not changed:
                break
        root = math.sqrt(cost)
        self.planned_unbalance_a = root
        moves = []
        for j in range(steps):
            i = pick_i[j]
            q = pick_q[j]
            moves.append((ids[i], phase[i], q))
            self._record_move(i, q, now_s)
        return moves

    def _cost(self, st):
        """J of the neutral state ``st`` (fast re, im, slow re, im, fluctuation re, im)."""
        cfg = self.config
        w = cfg.slow_weight
        return ((st[0] * st[0] + st[1] * st[1] + w * (st[2] * st[2] + st[3] * st[3])) / (1.0 + w)
                + cfg.fluct_weight * (st[4] * st[4] + st[5] * st[5]))

    def _apply(self, st, i, p, q, inv):
        """Move node slot i's estimates from phase p to phase q in the neutral state ``st``."""
        dr, di = _delta(self._xp[i], self._xq[i], p, q)
        st[0] += dr
        st[1] += di
        dr, di = _delta(self._sp[i], self._sq[i], p, q)
        st[2] += dr
        st[3] += di
        dr, di = _delta(self._cv[i] * inv, 0.0, p, q)
        st[4] += dr
        st[5] += di

    def _scan(self, st, cost, inv, allow_multi):
        """The single move that lowers J most from state ``st`` (of cost J = ``cost``).

        A node qualifies when its move lowers sqrt(J) by at least its need,
        and (unless ``allow_multi``) it would not become a multi house.
        Returns (new cost, slot, phase), slot -1 when no move qualifies. The
        loop allocates no containers (MicroPython boxes only the floats).
        """
        cfg = self.config
        w = cfg.slow_weight
        wc = cfg.fluct_weight
        norm = 1.0 / (1.0 + w)
        s = _S
        nfr = st[0]
        nfi = st[1]
        nsr = st[2]
        nsi = st[3]
        ncr = st[4]
        nci = st[5]
        root = math.sqrt(cost)
        mov = self._mov
        need = self._need
        phase = self._phase
        fp = self._xp
        fq = self._xq
        sp = self._sp
        sq = self._sq
        cv = self._cv
        best = cost
        best_i = -1
        best_q = 0
        for i in range(self.capacity):
            m = mov[i]
            if not m or (m == 2 and not allow_multi):
                continue
            lim = root - need[i] - 1e-6  # a real improvement, not a rounding one
            if lim <= 0.0:
                continue
            lim = lim * lim  # a move is acceptable only if its cost stays below this
            if lim > best:
                lim = best
            p = phase[i]
            a = fp[i]
            b = fq[i]
            c = sp[i]
            d = sq[i]
            e = cv[i] * inv
            # The node's loads (a - jb), (c - jd) and fluctuation e turned onto phases B and C
            # (on A they are unturned).
            fx1 = -0.5 * a - s * b
            fy1 = -s * a + 0.5 * b
            fx2 = -0.5 * a + s * b
            fy2 = s * a + 0.5 * b
            sx1 = -0.5 * c - s * d
            sy1 = -s * c + 0.5 * d
            sx2 = -0.5 * c + s * d
            sy2 = s * c + 0.5 * d
            ex = -0.5 * e
            ey = s * e
            # The neutrals without this node.
            if p == 0:
                bfr = nfr - a
                bfi = nfi + b
                bsr = nsr - c
                bsi = nsi + d
                bcr = ncr - e
                bci = nci
            elif p == 1:
                bfr = nfr - fx1
                bfi = nfi - fy1
                bsr = nsr - sx1
                bsi = nsi - sy1
                bcr = ncr - ex
                bci = nci + ey
            else:
                bfr = nfr - fx2
                bfi = nfi - fy2
                bsr = nsr - sx2
                bsi = nsi - sy2
                bcr = ncr - ex
                bci = nci - ey
            if p != 0:
                x = bfr + a
                y = bfi - b
                u = bsr + c
                v = bsi - d
                g = bcr + e
                k = (x * x + y * y + w * (u * u + v * v)) * norm + wc * (g * g + bci * bci)
                if k < lim:
                    best = lim = k
                    best_i = i
                    best_q = 0
            if p != 1:
                x = bfr + fx1
                y = bfi + fy1
                u = bsr + sx1
                v = bsi + sy1
                g = bcr + ex
                h = bci - ey
                k = (x * x + y * y + w * (u * u + v * v)) * norm + wc * (g * g + h * h)
                if k < lim:
                    best = lim = k
                    best_i = i
                    best_q = 1
            if p != 2:
                x = bfr + fx2
                y = bfi + fy2
                u = bsr + sx2
                v = bsi + sy2
                g = bcr + ex
                h = bci + ey
                k = (x * x + y * y + w * (u * u + v * v)) * norm + wc * (g * g + h * h)
                if k < lim:
                    best = lim = k
                    best_i = i
                    best_q = 2
        return best, best_i, best_q

    def _update_fluctuation(self, now_s):
        """Covariance of each node's (and the residual's) fluctuation with the feeder's.

        The feeder's fluctuation g is the sum of this round's deviations of
        every reading from its fast estimate. Loads that move together -- a
        cloud passing over a street of rooftop solar -- have a large
        covariance with g; spreading them over the phases cancels their swings
        in the neutral, which a mean estimate cannot see.
        """
        last = self._pt
        self._pt = now_s
        n = self.capacity
        ids = self._ids
        dv = self._dv
        rdv = self._rdv
        phase = self._phase
        g = rdv[0] + rdv[1] + rdv[2]
        for i in range(n):
            if ids[i] is not None and dv[i] != 0.0:
                g += 3.0 * dv[i] if phase[i] == THREE_PHASE else dv[i]
        if last is None:
            for i in range(n):
                dv[i] = 0.0
            return
        dt = now_s - last
        a = dt / (self.config.tau_slow_s + dt)
        self._gvar += a * (g * g - self._gvar)
        cv = self._cv
        for i in range(n):
            if ids[i] is not None and self._fresh(i, now_s):
                cv[i] += a * (dv[i] * g - cv[i])
            dv[i] = 0.0
        if self._rt is not None:
            rcv = self._rcv
            for p in range(3):
                rcv[p] += a * (rdv[p] * g - rcv[p])

    def _record_move(self, i, q, now_s):
        self._phase[i] = q
        self._last_move[i] = now_s
        k = self._k
        h = self._head[i]
        self._ring[i * k + h] = now_s
        self._head[i] = (h + 1) % k

    def _update_residual(self, now_s, meter):
        try:
            count = len(meter)
        except TypeError:
            raise BalancerError("meter: expected 6 numbers, got %r" % (meter,)) from None
        if count != 6:
            raise BalancerError("meter: expected 6 values (ip, iq of A, B, C), got %d" % count)
        for v in meter:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or \
                    not -10 * _MAX_CURRENT_A < v < 10 * _MAX_CURRENT_A:
                raise BalancerError("meter: %r is not a finite current within +-%d A" % (v, 10 * _MAX_CURRENT_A))
        if self._rt is not None and now_s < self._rt:
            raise BalancerError("meter reading at %r s is older than the last one at %r s" % (now_s, self._rt))
        # Instantaneous load on no fresh node = meter - fresh node readings, per phase.
        tot = self._tot
        for p in range(3):
            tot[2 * p] = meter[2 * p]
            tot[2 * p + 1] = meter[2 * p + 1]
        ids = self._ids
        phase = self._phase
        for i in range(self.capacity):
            if ids[i] is None or not self._fresh(i, now_s):
                continue
            p = phase[i]
            if p == THREE_PHASE:
                for j in (0, 2, 4):
                    tot[j] -= self._lp[i]
                    tot[j + 1] -= self._lq[i]
            else:
                tot[2 * p] -= self._lp[i]
                tot[2 * p + 1] -= self._lq[i]
        res = self._res
        if self._rt is None:
            af = as_ = ae = 1.0
        else:
            dt = now_s - self._rt
            af = dt / (self.config.tau_s + dt)
            as_ = dt / (self.config.tau_slow_s + dt)
            ae = dt / (self.config.tau_short_s + dt)
        rdv = self._rdv
        rsh = self._rsh
        rtr = self._rtr
        for p in range(3):
            j = 4 * p
            ip = tot[2 * p]
            iq = tot[2 * p + 1]
            rdv[p] = 0.0 if self._rt is None else ip - res[j]
            res[j] += af * (ip - res[j])
            res[j + 1] += af * (iq - res[j + 1])
            if self._rt is None:
                rsh[2 * p] = ip
                rsh[2 * p + 1] = iq
            else:
                rsh[2 * p] += ae * (ip - rsh[2 * p])
                rsh[2 * p + 1] += ae * (iq - rsh[2 * p + 1])
            rtr[2 * p] = ip - rsh[2 * p]
            rtr[2 * p + 1] = iq - rsh[2 * p + 1]
            res[j + 2] += as_ * (ip - res[j + 2])
            res[j + 3] += as_ * (iq - res[j + 3])
        self._rt = now_s

    def residual(self):
        """Fast estimate of the load on no fresh node, (ip_a, iq_a, ip_b, iq_b, ip_c, iq_c), or None."""
        if self._rt is None:
            return None
        r = self._res
        return (r[0], r[1], r[4], r[5], r[8], r[9])

    def estimate_inputs(self, now_s):
        """What J is computed from, for tests and logs (allocates).

        Returns (nodes, residual, residual_fluct): nodes is a list of
        (node_id, phase, fast_ip, fast_iq, slow_ip, slow_iq, fluct, counted),
        residual the 12 residual estimates (phase-major: fast ip, fast iq,
        slow ip, slow iq), residual_fluct the residual's common-fluctuation
        share per phase; zeros without a meter. ``fluct`` is in amperes:
        cov(node, feeder fluctuation) / sd(feeder fluctuation).
        """
        use_res = self._rt is not None
        gsd = math.sqrt(self._gvar)
        inv = 1.0 / gsd if gsd > 1e-6 else 0.0
        out = []
        for i in range(self.capacity):
            if self._ids[i] is None or self._lt[i] is None:
                continue
            counted = (not use_res) or self._fresh(i, now_s)
            c = self.config.trend_weight
            out.append((self._ids[i], self._phase[i], self._fp[i] + c * (self._lp[i] - self._ep[i]),
                        self._fq[i] + c * (self._lq[i] - self._eq[i]), self._sp[i], self._sq[i],
                        self._cv[i] * inv, counted))
        if not use_res:
            return out, [0.0] * 12, [0.0] * 3
        res = list(self._res)
        c = self.config.trend_weight
        for p in range(3):
            res[4 * p] += c * self._rtr[2 * p]
            res[4 * p + 1] += c * self._rtr[2 * p + 1]
        return out, res, [x * inv for x in self._rcv]


def _delta(a, b, p, q):
    """Change of the neutral phasor when load (a - jb) moves from phase p to phase q."""
    re_q, im_q = _turn(a, b, q)
    re_p, im_p = _turn(a, b, p)
    return re_q - re_p, im_q - im_p


def _turn(a, b, p):
    """Absolute phasor of (a - jb) on phase p (as phasecore.metrics.abs_phasor)."""
    if p == 0:
        return a, -b
    if p == 1:
        return -0.5 * a - _S * b, -_S * a + 0.5 * b
    return -0.5 * a + _S * b, _S * a + 0.5 * b
