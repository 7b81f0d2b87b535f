"""Learning each house's daily pattern: a balancer that also plans on what a house drew at this time on earlier days.

For the transformer Pi (bounded memory there, nothing on a node):
``LearningBalancer(config, capacity, weight=0.5)`` keeps, per node, an
exponentially weighted mean over days of its active and reactive current in
each of ``BLOCKS`` blocks of the day (96 x 15 minutes: 2 x 96 floats per
node, allocated once), updated online from its readings. It plans as
``Balancer`` does, except that the slow term of J (what the house draws over
the next hour) blends the slow estimate with the learned mean of the next
hour at this time of day, ``weight`` of the latter once ``DAYS_TO_TRUST``
days have been learned (less before). A house whose evenings are its own
(a car on charge at 18:30 most days) is placed for the evening before it
comes.

The one thing to know: it learns time of day only (no weekdays, no weather),
and its gain depends on how much a house's days resemble each other;
docs/balancer.md reports what it adds on days 2-7 of week-long streets.
"""

from phasecore.balancer import Balancer, BalancerError
from phasecore.balancer.config import SOLID_STATE
from phasecore.errors import quote

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


__all__ = ("LearningBalancer", "BLOCKS", "DAYS_TO_TRUST")

BLOCKS = const(96)  # 15-minute blocks of the day
BLOCK_S = const(900)  # BLOCKS x BLOCK_S is a day
AHEAD = const(4)  # blocks of the next hour the slow term looks at
DAYS_TO_TRUST = const(2)  # days of learning before the full weight
ALPHA = 0.3  # weight of a new day in a block's mean over days


class LearningBalancer(Balancer):
    """``Balancer`` that learns each node's daily pattern (see the module docstring)."""

    def __init__(self, config=None, capacity=256, weight=0.5):
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not 0.0 <= weight <= 1.0:
            raise BalancerError("history weight must be 0..1, got %s" % (quote(weight),))
        super().__init__(config, capacity)
        n = self.capacity
        self.weight = float(weight)
        self._hp = [0.0] * (n * BLOCKS)  # learned mean per node and block, active
        self._hq = [0.0] * (n * BLOCKS)  # reactive
        self._acc_p = [0.0] * n  # this block's running sum, active
        self._acc_q = [0.0] * n
        self._acc_n = [0] * n  # readings in this block so far
        self._blk = [-1] * n  # the block (absolute: time // BLOCK_S) being summed
        self._days = [0] * n  # blocks learned / BLOCKS: days of history

    def add_node(self, node_id, phase, switchable=True, kind=0):
        i = super().add_node(node_id, phase, switchable, kind)
        for j in range(i * BLOCKS, (i + 1) * BLOCKS):
            self._hp[j] = self._hq[j] = 0.0
        self._acc_p[i] = self._acc_q[i] = 0.0
        self._acc_n[i] = 0
        self._blk[i] = -1
        self._days[i] = 0
        return i

    def reading(self, node_id, now_s, current_a, pf=None, phase=None):
        super().reading(node_id, now_s, current_a, pf, phase)
        i = self._slot[node_id]
        blk = now_s // BLOCK_S
        if blk != self._blk[i]:
            self._close_block(i)
            self._blk[i] = blk
        self._acc_p[i] += self._lp[i]
        self._acc_q[i] += self._lq[i]
        self._acc_n[i] += 1

    def _close_block(self, i):
        n = self._acc_n[i]
        if n and self._blk[i] >= 0:
            j = i * BLOCKS + self._blk[i] % BLOCKS
            mp = self._acc_p[i] / n
            mq = self._acc_q[i] / n
            seen = self._days[i]
            a = 1.0 if seen < BLOCKS else ALPHA  # the first day fills, later days blend
            self._hp[j] += a * (mp - self._hp[j])
            self._hq[j] += a * (mq - self._hq[j])
            self._days[i] = seen + 1
        self._acc_p[i] = self._acc_q[i] = 0.0
        self._acc_n[i] = 0

    def _planning_estimates(self):
        super()._planning_estimates()
        w0 = self.weight
        if w0 <= 0.0:
            return
        now = self._pt
        if now is None:
            return
        b0 = (now // BLOCK_S + 1) % BLOCKS
        ids = self._ids
        yp = self._yp
        yq = self._yq
        for i in range(self.capacity):
            if ids[i] is None or self._kind[i] == SOLID_STATE:
                continue
            days = self._days[i] // BLOCKS
            if days < 1:
                continue
            w = w0 if days >= DAYS_TO_TRUST else w0 * days / DAYS_TO_TRUST
            base = i * BLOCKS
            sp = 0.0
            sq = 0.0
            for k in range(AHEAD):
                j = base + (b0 + k) % BLOCKS
                sp += self._hp[j]
                sq += self._hq[j]
            yp[i] = (1.0 - w) * yp[i] + w * sp / AHEAD
            yq[i] = (1.0 - w) * yq[i] + w * sq / AHEAD
