"""The balancer's search under limits: which moves, within dwell, budgets and the multi-move share.

Greedy: each step takes the single move that lowers J (``phasecore.balancer.objective``)
most, among the movable nodes whose move lowers ``sqrt(J)`` by at least
``min_move_gain_a`` plus ``budget_gain_a`` for each move the node made in the
last 24 h. Limits: ``moves_per_round``, ``min_dwell_s`` per node, at most
``moves_per_day`` moves of a node in any 24 h (a ring of move times per
node), at most ``multi_share`` of the registered nodes moved twice or more in
24 h, and a scarcity factor on the required gain as the 24 h budget runs out.
A plan is carried out only when its gain is at least ``min_gain_a`` (and
``min_gain_frac`` of the mean phase current) for ``persist_rounds`` rounds in
a row; ``refine_passes`` optionally re-chooses each move given the others.

The one thing to know: ``Search`` is a part of ``phasecore.balancer.Balancer``
(a mixin): it reads the node slots and the estimates the balancer keeps, and
its ``_scan`` loop allocates no containers (MicroPython boxes only floats).
"""

import math

from phasecore.balancer.config import DAY_S, MAX_MOVES_PER_ROUND, SOLID_STATE, THREE_PHASE
from phasecore.balancer.objective import _S

_NO_MOVES = ()


class Search:
    """The budgets and the greedy search; part of ``Balancer`` (see the module docstring)."""

    def _init_search(self, n, config):
        self._last_move = [None] * n
        # Each node's ring of its last move times, as long as its kind's 24 h
        # budget as the balancer was built (a value raised later is capped
        # there): allocated when the node is added, never in a round.
        self._kcap = (
            config.moves_per_day if config.moves_per_day > 0 else 1,
            config.ss_moves_per_day if config.ss_moves_per_day > 0 else 1,
        )
        self._ring = [None] * n
        self._head = [0] * n
        self._persist = 0
        self._mov = bytearray(n)  # scratch: movable this round
        self._need = [0.0] * n  # scratch: gain each node's move must bring
        # Sized for the largest plan any config allows, so moves_per_round may
        # be changed on a running balancer.
        self._pick_i = [0] * MAX_MOVES_PER_ROUND
        self._pick_q = bytearray(MAX_MOVES_PER_ROUND)
        self._pick_m = bytearray(MAX_MOVES_PER_ROUND)

    def _reset_budget(self, i, gone):
        """Slot ``i`` starts with no moves, or with ``gone``'s (last move, move times oldest first)."""
        k = self._kcap[self._kind[i]]
        ring = [None] * k
        self._last_move[i] = None
        self._head[i] = 0
        if gone is not None:
            self._last_move[i] = gone[0]
            times = gone[1]
            if len(times) > k:
                times = times[len(times) - k :]
            for j in range(len(times)):
                ring[j] = times[j]
            self._head[i] = len(times) % k
        self._ring[i] = ring

    def _recent_moves(self, i):
        """Node slot ``i``'s remembered move times, oldest first (allocates)."""
        ring = self._ring[i]
        return sorted([t for t in ring if t is not None]) if ring is not None else []

    def _forget_gone(self, now_s):
        """Drop removed nodes whose last move no longer counts against any limit."""
        cfg = self.config
        keep_s = DAY_S
        for d in (cfg.min_dwell_s, cfg.ss_min_dwell_s):
            if d > keep_s:
                keep_s = d
        old = [node for node, gone in self._gone.items() if now_s - gone[0] >= keep_s]
        for node in old:
            del self._gone[node]

    def _moves_24h(self, i, now_s):
        # Newest first, back to the first move older than 24 h: O(moves in 24 h),
        # not O(ring) -- a solid-state node's ring holds up to a day of moves.
        ring = self._ring[i]
        k = len(ring)
        j = self._head[i]
        n = 0
        while n < k:
            j = j - 1 if j else k - 1
            t = ring[j]
            if t is None or now_s - t >= DAY_S:
                break
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
        dwell = cfg.ss_min_dwell_s if self._kind[i] == SOLID_STATE else cfg.min_dwell_s
        return last is None or now_s - last >= dwell

    def _search(self, now_s, cost0):
        """This round's moves from the neutral state ``_st`` of cost ``cost0`` (J): a list, usually empty."""
        cfg = self.config
        n = self.capacity
        ids = self._ids
        phase = self._phase
        inv = self._inv
        mean = self._mean
        root0 = self.estimated_unbalance_a
        mov = self._mov
        need = self._need
        any_movable = False
        kind = self._kind
        # A mechanical house that moved twice or more in 24 h is a "multi"
        # house: at most multi_share of the registered mechanical nodes may be
        # one, so the median such house switches at most once a day whatever
        # the load does. Solid-state nodes have their own budget and no share.
        registered = 0
        multi = 0
        # Per kind: moves spent in 24 h, switchable nodes, budget per node.
        spent_m = spent_s = 0
        switch_m = switch_s = 0
        # The move-time rings hold the budget the balancer was built with: a
        # value raised later on its config is capped there.
        kcap = self._kcap
        per_day_m = cfg.moves_per_day if cfg.moves_per_day < kcap[0] else kcap[0]
        per_day_s = cfg.ss_moves_per_day if cfg.ss_moves_per_day < kcap[1] else kcap[1]
        for i in range(n):
            if ids[i] is None:
                mov[i] = 0
                continue
            used = self._moves_24h(i, now_s)
            if kind[i] == SOLID_STATE:
                spent_s += used
                if self._switch[i]:
                    switch_s += 1
                if used >= per_day_s or not self._movable(i, now_s):
                    mov[i] = 0
                else:
                    mov[i] = 1
                    need[i] = cfg.ss_min_move_gain_a + cfg.ss_budget_gain_a * used
                    any_movable = True
                continue
            registered += 1
            spent_m += used
            if self._switch[i]:
                switch_m += 1
            if used >= 2:
                multi += 1
            if used >= per_day_m or not self._movable(i, now_s):
                mov[i] = 0
            else:
                mov[i] = 2 if used == 1 else 1  # 2: its move would make it a multi house
                need[i] = cfg.min_move_gain_a + cfg.budget_gain_a * used
                any_movable = True
        multi_cap = int(cfg.multi_share * registered)
        if cfg.scarcity > 0.0 and any_movable:
            # Scarcity, per switch kind: once more than scarcity_from of the
            # moves the limits allow in 24 h are spent, every move must bring
            # more, rising without bound as the budget runs out -- the last
            # moves are kept for the largest unbalance, not spent on the next
            # small one.
            extra = multi_cap if multi_cap < switch_m else switch_m
            scale_m = self._scarcity(spent_m, switch_m + extra * (per_day_m - 1))
            scale_s = self._scarcity(spent_s, switch_s * per_day_s)
            if scale_m != 1.0 or scale_s != 1.0:
                for i in range(n):
                    if mov[i]:
                        need[i] *= scale_s if kind[i] == SOLID_STATE else scale_m
        if not any_movable or cfg.moves_per_round == 0:
            self._persist = 0
            return _NO_MOVES

        # Greedy: each step takes the single move that lowers J most among the
        # moves that each bring their node's required gain.
        mech = 0  # mechanical moves in the plan: they set the plan's gates
        st = self._st
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
            if kind[i] != SOLID_STATE:
                mech += 1
            mov[i] = 0
            steps += 1
        root = math.sqrt(cost)
        gain = root0 - root
        # A plan with a mechanical move is held to the plain gates; a plan of
        # solid-state moves only to the ss_ ones (a half-cycle gap costs the
        # house nothing it notices, so it need not wait for persistence).
        if mech:
            want = cfg.min_gain_a
            rounds = cfg.persist_rounds
        else:
            want = cfg.ss_min_gain_a
            rounds = cfg.ss_persist_rounds
        if cfg.min_gain_frac * mean > want:
            want = cfg.min_gain_frac * mean
        if steps == 0 or gain < want:
            self._persist = 0
            return _NO_MOVES
        self._persist += 1
        if self._persist < rounds:
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
                self._apply(st, i, q, phase[i], inv)  # undo
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
        sp = self._yp
        sq = self._yq
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

    def _scarcity(self, spent, budget):
        """The factor on the required gain once ``spent`` of ``budget`` moves (24 h) are used."""
        cfg = self.config
        f = spent / budget if budget > 0 else 1.0
        if f <= cfg.scarcity_from:
            return 1.0
        if f > 0.95:
            f = 0.95
        return 1.0 + cfg.scarcity * (f - cfg.scarcity_from) / (1.0 - f)

    def _record_move(self, i, q, now_s):
        self._phase[i] = q
        self._last_move[i] = now_s
        ring = self._ring[i]
        h = self._head[i]
        ring[h] = now_s
        self._head[i] = (h + 1) % len(ring)
