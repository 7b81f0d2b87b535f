"""Fresh time after a reboot: the node takes its clock only from a Pi heartbeat that echoes its boot nonce.

The attack (issue 13): an attacker records a Pi heartbeat and a command, withholds
both, lets the node reboot, and delivers them long after: before the boot
nonce the node set its clock from the old heartbeat and ran the old command
well past its deadline. Now the old heartbeat cannot carry the nonce drawn at
this boot, so it sets nothing, and the old command is refused (NO_TIME before
a fresh echo, EXPIRED or a replay after). The node's own random source is the
real one here (``os.urandom``); the rigs of the other tests use a fixed one.
Both interpreters.
"""

from node_fixtures import ADDR, T0, Pi, provision, rmtree, tmpdir
from phasecore import codes, keys, msg, seal
from phasecore.replay import SequenceCounter
from phasenode.events import EventQueue
from phasenode.session import Session


class Rig:
    """One node's session on its file store, restartable (a reboot keeps the flash), and its Pi."""

    def __init__(self):
        self.root = tmpdir("fresh")
        self.store, self.config = provision(self.root)
        self.pi = Pi()
        self.ms = 1000
        self.boot()

    def boot(self, random=None):
        nk = keys.NodeKeys(self.store.read_secret(self.config), ADDR)
        kw = {} if random is None else {"random": random}
        self.session = Session(
            nk.node_context(),
            SequenceCounter(*self.store.sequence_storage("g0"), block=16),
            self.store.pi_seq_storage(0),
            self.store.oplock_storage(),
            events=EventQueue(),
            now_ms=self.ms,
            **kw,
        )

    def later(self, s):
        self.ms += int(s * 1000)

    def send(self, payload):
        """Deliver a sealed payload; the opened reply ``(kind, seq, body)`` or None."""
        r = self.session.handle(payload, self.ms)
        if r is None:
            return None
        kind, seq, plain = seal.open_raw(bytes(r), bytes([ADDR]), self.pi.gw.recipients)
        return kind, seq, msg.decode(kind, plain)

    def heartbeat(self, time_s, echo=None):
        fields = {"uptime_s": 1, "fw": "pi", "time_s": time_s}
        if echo is not None:
            fields["echo"] = echo
        return self.pi.sealed(msg.HEARTBEAT, fields)

    def report(self, deadline_s, cid=1):
        return self.pi.sealed(msg.COMMAND, {"id": cid, "op": msg.OP_REPORT, "deadline_s": deadline_s})

    def freshen(self, time_s):
        """What the Pi does: a heartbeat, read the nonce from the answer, a heartbeat echoing it."""
        _, _, hb = self.send(self.heartbeat(time_s))
        nonce = hb.get("boot_nonce")
        assert nonce is not None and 1 <= nonce <= msg.NONCE_MAX, hb
        _, _, hb = self.send(self.heartbeat(time_s, echo=nonce))
        assert "boot_nonce" not in hb and self.session.fresh
        return nonce

    def close(self):
        rmtree(self.root)


def _ack(reply):
    kind, _, body = reply
    assert kind == msg.ACK, reply
    return body["outcome"], body.get("reason")


def test_no_clock_and_no_command_until_the_pi_echoes_the_boot_nonce():
    rig = Rig()
    try:
        _, _, hb = rig.send(rig.heartbeat(T0))
        assert "boot_nonce" in hb and not rig.session.fresh and rig.session.now_s() is None
        assert _ack(rig.send(rig.report(T0 + 60))) == (msg.ACK_REFUSED, codes.R_NO_TIME)
        # A wrong echo proves nothing either.
        rig.send(rig.heartbeat(T0, echo=hb["boot_nonce"] ^ 1))
        assert not rig.session.fresh
        rig.send(rig.heartbeat(T0, echo=hb["boot_nonce"]))
        assert rig.session.fresh and rig.session.now_s() == T0
        assert _ack(rig.send(rig.report(T0 + 60, cid=2))) == (msg.ACK_DONE, None)
    finally:
        rig.close()


def test_a_withheld_heartbeat_and_command_after_a_reboot_are_refused():
    rig = Rig()
    try:
        rig.freshen(T0)
        # Recorded and withheld by the attacker: a heartbeat echoing this boot's nonce, and a command.
        old_nonce = rig.session._nonce
        old_hb = rig.heartbeat(T0 + 100, echo=old_nonce)
        old_cmd = rig.report(T0 + 160, cid=9)
        old_cmd2 = rig.report(T0 + 160, cid=10)
        rig.later(10)
        rig.boot()  # a reboot, within the Pi-sequence persistence interval: nothing newer was saved
        assert rig.session._nonce != old_nonce
        rig.later(3600)  # delivered an hour later
        reply = rig.send(old_hb)
        assert reply is not None and reply[2].get("boot_nonce") not in (None, old_nonce)
        assert not rig.session.fresh, "the withheld heartbeat set the clock"
        assert _ack(rig.send(old_cmd)) == (msg.ACK_REFUSED, codes.R_NO_TIME)
        # Once the real Pi gives fresh time, an old command is past its deadline.
        rig.freshen(T0 + 3700)
        assert _ack(rig.send(old_cmd2)) == (msg.ACK_EXPIRED, codes.R_DEADLINE_PASSED)
        assert rig.session.refusals == 2
    finally:
        rig.close()


def test_a_heartbeat_that_would_turn_the_clock_back_is_not_believed_without_a_new_echo():
    rig = Rig()
    try:
        rig.freshen(T0)
        late = rig.heartbeat(T0 + 10)  # sealed now, delivered 10 minutes later
        rig.later(600)
        _, _, hb = rig.send(late)
        assert rig.session.now_s() == T0 + 600, "the clock went back"
        assert "boot_nonce" in hb  # the node asks for a fresh echo
        # A heartbeat that moves it forward is taken (a later sequence number).
        rig.send(rig.heartbeat(T0 + 700, echo=hb["boot_nonce"]))
        assert rig.session.now_s() == T0 + 700
    finally:
        rig.close()


def test_an_echo_that_comes_too_late_proves_nothing():
    rig = Rig()
    try:
        _, _, hb = rig.send(rig.heartbeat(T0))
        rig.later(rig.session.echo_s + 1)
        _, _, hb2 = rig.send(rig.heartbeat(T0 + 700, echo=hb["boot_nonce"]))
        assert not rig.session.fresh and hb2["boot_nonce"] != hb["boot_nonce"]
        rig.send(rig.heartbeat(T0 + 701, echo=hb2["boot_nonce"]))
        assert rig.session.fresh
    finally:
        rig.close()


def test_a_node_without_a_random_source_refuses_every_command():
    def broken(n):
        raise OSError("no RNG")

    rig = Rig()
    try:
        rig.boot(random=broken)
        _, _, hb = rig.send(rig.heartbeat(T0))
        assert "boot_nonce" not in hb and rig.session.boot_nonce is None
        rig.send(rig.heartbeat(T0, echo=1))
        assert _ack(rig.send(rig.report(T0 + 60))) == (msg.ACK_REFUSED, codes.R_NO_TIME)
    finally:
        rig.close()
