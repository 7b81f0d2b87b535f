"""The balancer's objective: the estimated neutral current, J, and what a move does to it.

``J = (|N_fast|^2 + w |N_slow|^2) / (1 + w) + w_c |N_fluct|^2``: the squared
neutral current (the phasor sum of the estimated phase currents, with power
factor) of the fast and the slow estimates, and of the loads' common
fluctuation. With equal power factors ``|N|^2`` is 3/2 times the sum of
squared deviations of the phase magnitudes, so lowering J lowers the current
unbalance factor too. ``estimated_unbalance_a`` is ``sqrt(J)``.

The one thing to know: ``Objective`` is a part of
``phasecore.balancer.Balancer`` (a mixin): ``_neutral_state`` sums the
estimates (``phasecore.balancer.estimates``) into phase totals and leaves the
neutral state in ``_st`` for the search (``phasecore.balancer.search``), which
moves nodes in it with ``_apply``.
"""

import math

from phasecore.balancer.config import THREE_PHASE

_S = 0.8660254037844386  # sin 120 deg


class Objective:
    """The neutral state and its cost; part of ``Balancer`` (see the module docstring)."""

    def _init_objective(self):
        self._tot = [0.0] * 12  # scratch: estimated phase totals (same layout as _res)
        self._st = [0.0] * 6  # scratch: neutral state (fast, slow, fluctuation; re, im)
        self._inv = 0.0  # this round's 1 / sd(feeder fluctuation), 0 when none
        self._mean = 0.0  # this round's mean estimated phase current (A)

    def _neutral_state(self, now_s):
        """J of this round's estimates: sets ``_st`` (the neutral state), ``_inv``, ``_mean`` and the
        ``estimated_*`` figures; returns J."""
        cfg = self.config
        n = self.capacity
        ids = self._ids
        phase = self._phase
        fp = self._xp
        fq = self._xq
        c = cfg.trend_weight
        sp = self._yp
        sq = self._yq
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
        st = self._st
        st[0] = nfr
        st[1] = nfi
        st[2] = nsr
        st[3] = nsi
        st[4] = ncr
        st[5] = nci
        self._inv = inv
        self._mean = mean
        return cost0

    def _cost(self, st):
        """J of the neutral state ``st`` (fast re, im, slow re, im, fluctuation re, im)."""
        cfg = self.config
        w = cfg.slow_weight
        return (st[0] * st[0] + st[1] * st[1] + w * (st[2] * st[2] + st[3] * st[3])) / (1.0 + w) + cfg.fluct_weight * (
            st[4] * st[4] + st[5] * st[5]
        )

    def _apply(self, st, i, p, q, inv):
        """Move node slot i's estimates from phase p to phase q in the neutral state ``st``."""
        dr, di = _delta(self._xp[i], self._xq[i], p, q)
        st[0] += dr
        st[1] += di
        dr, di = _delta(self._yp[i], self._yq[i], p, q)
        st[2] += dr
        st[3] += di
        dr, di = _delta(self._cv[i] * inv, 0.0, p, q)
        st[4] += dr
        st[5] += di


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
