"""The balancer's estimates: per-house current estimates, their trend, the meter's residual, the common fluctuation.

Per node, exponentially weighted means of its readings (active and reactive
current): a fast one (``tau_s``), a slow one (``tau_slow_s``) and a short one
(``tau_short_s``) behind the trend term; the planning estimate is the fast
mean plus ``trend_weight`` times the latest reading's departure from the
short mean. With a transformer meter, the load on no fresh node (the meter
minus the fresh readings) is estimated per phase the same ways (the
residual). And the covariance of each node's (and the residual's) deviation
with the feeder's, which the objective turns into the common-fluctuation term.

The one thing to know: ``Estimates`` is a part of ``phasecore.balancer.Balancer``
(a mixin, not used alone): it keeps its lists in the balancer's node slots
(``_ids``, ``_phase``, ``_status`` are the balancer's) and allocates them once,
in ``_init_estimates``, for ``capacity`` nodes.
"""

import math

from phasecore.balancer.config import MAX_CURRENT_A as _MAX_CURRENT_A
from phasecore.balancer.config import ONLINE, SOLID_STATE, THREE_PHASE, BalancerError
from phasecore.errors import quote


class Estimates:
    """The estimate state and its updates; part of ``Balancer`` (see the module docstring)."""

    def _init_estimates(self, n):
        self._fp = [0.0] * n  # fast estimate: active current (A, signed)
        self._ep = [0.0] * n  # short estimate (tau_short_s), active
        self._eq = [0.0] * n  # short estimate, reactive
        self._xp = [0.0] * n  # scratch: planning estimate, active
        self._xq = [0.0] * n  # scratch: planning estimate, reactive
        self._yp = [0.0] * n  # scratch: what the slow term of J counts for the node, active
        self._yq = [0.0] * n  # scratch: the same, reactive
        self._fq = [0.0] * n  # fast estimate: reactive current (A)
        self._sp = [0.0] * n  # slow estimate, active
        self._sq = [0.0] * n  # slow estimate, reactive
        self._cv = [0.0] * n  # covariance of the node's fluctuation with the feeder's (A^2)
        self._dv = [0.0] * n  # this round's fluctuation (reading - fast estimate), active
        self._lp = [0.0] * n  # last reading, active
        self._lq = [0.0] * n  # last reading, reactive
        self._lt = [None] * n  # time of the last reading
        self._t0 = [None] * n  # time of the first reading
        # Load on no fresh node, per phase: fast and slow, active and reactive.
        self._res = [0.0] * 12
        self._rsh = [0.0] * 6  # residual's short estimate (ip, iq per phase)
        self._rtr = [0.0] * 6  # residual's latest value minus its short estimate
        self._rcv = [0.0, 0.0, 0.0]  # the residual's covariance with the feeder's fluctuation, per phase
        self._gvar = 0.0  # variance of the feeder's fluctuation (A^2)
        self._rdv = [0.0, 0.0, 0.0]  # scratch: the residual's fluctuation this round
        self._rt = None  # time of the last meter reading
        self._pt = None  # time of the last plan round

    def _reset_estimates(self, i):
        """Slot ``i`` starts with no readings (a node added)."""
        self._fp[i] = self._fq[i] = self._sp[i] = self._sq[i] = self._lp[i] = self._lq[i] = 0.0
        self._ep[i] = self._eq[i] = 0.0
        self._cv[i] = self._dv[i] = 0.0
        self._lt[i] = self._t0[i] = None

    # -- readings ---------------------------------------------------------

    def reading(self, node_id, now_s, current_a, pf=None, phase=None):
        """Feed one reading: current in A (signed, negative when the house exports).

        For a three-phase node give the current of one phase (its load split
        evenly). ``pf`` is the power factor (lagging, 0 < pf <= 1) or None for
        the configured default; ``phase`` the phase the node reports being on.
        """
        i = self._index(node_id)
        if (
            not isinstance(current_a, (int, float))
            or current_a != current_a
            or not -_MAX_CURRENT_A < current_a < _MAX_CURRENT_A
        ):
            raise BalancerError(
                "node %s: current %s A not a finite value within +-%d A"
                % (quote(node_id), quote(current_a), _MAX_CURRENT_A)
            )
        if pf is None:
            pf = self.config.default_pf
        elif not isinstance(pf, (int, float)) or not 0.0 < pf <= 1.0:
            raise BalancerError("node %s: power factor %s outside (0, 1]" % (quote(node_id), quote(pf)))
        if not isinstance(now_s, int):
            raise BalancerError("node %s: time %s is not an integer number of seconds" % (quote(node_id), quote(now_s)))
        last = self._lt[i]
        if last is not None and now_s < last:
            raise BalancerError(
                "node %s: reading at %s s is older than the last one at %s s"
                % (quote(node_id), quote(now_s), quote(last))
            )
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

    def _planning_estimates(self):
        """Fill ``_xp``, ``_xq`` (fast term) and ``_yp``, ``_yq`` (slow term) for this round."""
        cfg = self.config
        n = self.capacity
        ids = self._ids
        kind = self._kind
        # Planning estimate: the fast mean plus trend_weight times the latest
        # reading's departure from the short mean (a step shows at once, a
        # spike already fading counts less); the slow term counts the slow mean.
        # A solid-state node (with ss_follow_reading) can be moved again
        # within minutes: it is placed for the next minutes, on its latest
        # reading in both terms (the best predictor of the next minute we
        # found; docs/balancer.md).
        fp = self._xp
        fq = self._xq
        yp = self._yp
        yq = self._yq
        c = cfg.trend_weight
        follow = cfg.ss_follow_reading
        for i in range(n):
            if ids[i] is not None:
                if follow and kind[i] == SOLID_STATE:
                    fp[i] = yp[i] = self._lp[i]
                    fq[i] = yq[i] = self._lq[i]
                else:
                    fp[i] = self._fp[i] + c * (self._lp[i] - self._ep[i])
                    fq[i] = self._fq[i] + c * (self._lq[i] - self._eq[i])
                    yp[i] = self._sp[i]
                    yq[i] = self._sq[i]

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

    def _update_residual(self, now_s, meter):
        try:
            count = len(meter)
        except TypeError:
            raise BalancerError("meter: expected 6 numbers, got %s" % (quote(meter),)) from None
        if count != 6:
            raise BalancerError("meter: expected 6 values (ip, iq of A, B, C), got %d" % count)
        for v in meter:
            if (
                isinstance(v, bool)
                or not isinstance(v, (int, float))
                or v != v
                or not -10 * _MAX_CURRENT_A < v < 10 * _MAX_CURRENT_A
            ):
                raise BalancerError("meter: %s is not a finite current within +-%d A" % (quote(v), 10 * _MAX_CURRENT_A))
        if self._rt is not None and now_s < self._rt:
            raise BalancerError(
                "meter reading at %s s is older than the last one at %s s" % (quote(now_s), quote(self._rt))
            )
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
        self._planning_estimates()
        for i in range(self.capacity):
            if self._ids[i] is None or self._lt[i] is None:
                continue
            counted = (not use_res) or self._fresh(i, now_s)
            out.append(
                (
                    self._ids[i],
                    self._phase[i],
                    self._xp[i],
                    self._xq[i],
                    self._yp[i],
                    self._yq[i],
                    self._cv[i] * inv,
                    counted,
                )
            )
        if not use_res:
            return out, [0.0] * 12, [0.0] * 3
        res = list(self._res)
        c = self.config.trend_weight
        for p in range(3):
            res[4 * p] += c * self._rtr[2 * p]
            res[4 * p + 1] += c * self._rtr[2 * p + 1]
        return out, res, [x * inv for x in self._rcv]
