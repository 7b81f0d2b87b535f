"""The home node's application: one asyncio loop that measures, checks, switches and reports.

``phasenode.startup.main`` (run by ``main.py``) loads the board file and the
node config, builds the HAL and calls ``run(board, hal, config, store)``.
``Node`` builds everything from those four:

- the relay controller (``phasenode.relay``) first: it opens every relay at
  construction and restores the committed phase after the dead time;
- the PZEM-004T driver on the meter UART, the anomaly checks
  (``phasenode.checks``) with the config's limits;
- the keys (the node secret named by the config), the persisted sequence
  counter and the secure session (``phasenode.session``);
- the links the board has: RS-485 (``phasenode.link_rs485``) and/or LoRa
  (``phasenode.link_lora``, SX127x radios; class A by default, polled with
  the ``lora_polled`` setting);
- the watchdog, from the board file's period;
- firmware updates (``phasenode.ota``, docs/ota.md): the ``Updater`` is made
  on the first OTA message, or at boot when this boot is an unconfirmed
  trial of a new firmware (it confirms it, or rolls it back at its
  deadline) or a rollback waits to be reported; without ``phaseboot.py`` on
  the flash (a node deployed before updates existed) updates are
  UNSUPPORTED.

Tasks, all cooperative (no blocking sleep anywhere, no state shared but
through the objects above):

- sample: read the meter every ``sample_ms``, run the checks (which report
  to the relay), hand the values to the session, move the relay's and the
  checks' events to the event queue, and on RS-485 seal the next reading so
  a poll is answered at once;
- relay: ``RelayController.tick`` every 200 ms, or when a move's dead time
  ends;
- the links' own loops;
- supervise: feed the watchdog only while every other task has run
  recently. A task that hangs (a driver stuck in a loop, an exception that
  killed a task) stops the feeding, and the chip resets; boot.py opens the
  relays first, the relay controller restores the phase.

If the node's key or sequence counter cannot be used (missing key file, both
copies of the counter unreadable) the node runs local-only: relay restore,
checks and lock-outs, watchdog; no link, because sealing would risk reusing a
nonce. A radio without a driver (SX1262 for now) or that does not answer
costs the LoRa link the same way. ``Node.local_only`` says why.

Allocation: the steady sampling loop reuses one ``Measurement``, the checks,
the relay's event hand-over and the event queue allocate nothing; what
remains per sample is two coroutine frames (``sample_once`` and the meter
transaction) and, when the reading changed or a poll took it, the seal of the
next one (about 0.9 KB in all on the 64-bit unix port, reclaimed by the
collector: no growth).

Settings (``Settings``) come from config.json's optional ``app`` object,
validated by ``phasenode.settings.NodeConfig`` as ``config.app`` (names, ranges
and defaults in ``phasenode.settings.APP_SETTINGS``).

Public: ``run``, ``Node``, ``Settings``, ``AppError``.
"""

from phasecore.errors import PhasecoreError, quote
from phasecore.keys import NodeKeys
from phasecore.replay import SequenceCounter
from phasenode.checks import Checks
from phasenode.compat import asyncio, const, sleep_ms, ticks_diff, ticks_ms
from phasenode.drivers.pzem import METER_ERRORS, ImplausibleReading, Measurement, Pzem
from phasenode.errors import NodeError
from phasenode.events import EventQueue
from phasenode.relay import RelayController, SolidStateController
from phasenode.session import Session
from phasenode.settings import APP_SETTINGS

__all__ = ("run", "Node", "Settings", "AppError")

_RELAY_TICK_MS = const(200)
_SUPERVISE_MS = const(500)
_SLACK_MS = const(2000)


class AppError(NodeError):
    """The node application cannot be built from this board and config (says what and where)."""


class Settings:
    """The application's tunables, validated: ``Settings(sample_ms=1000)``; names, ranges and
    defaults are ``phasenode.settings.APP_SETTINGS`` (config.json's ``app`` object)."""

    def __init__(self, **kw):
        for name, lo, hi, default in APP_SETTINGS:
            v = kw.pop(name, default)
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise AppError("app.%s must be an integer %d..%d, got %s" % (name, lo, hi, quote(v)))
            setattr(self, name, v)
        for name in kw:
            raise AppError("app.%s: unknown setting" % name)
        if self.lora_report_min_s > self.lora_report_max_s:
            raise AppError(
                "app.lora_report_min_s %d exceeds lora_report_max_s %d"
                % (self.lora_report_min_s, self.lora_report_max_s)
            )

    @classmethod
    def from_config(cls, config):
        """The settings of a ``NodeConfig``: its ``app`` object if it has one, else the defaults."""
        d = getattr(config, "app", None)
        if d is None:
            return cls()
        if not isinstance(d, dict):
            raise AppError("app must be an object, got %s" % (quote(d),))
        return cls(**d)

    def as_dict(self):
        d = {}
        for name, _lo, _hi, _default in APP_SETTINGS:
            d[name] = getattr(self, name)
        return d


class Node:
    """The node, built from ``board`` (``phasenode.board.Board``), ``hal`` (``phasenode.hal.for_board``),
    ``config`` (``phasenode.settings.NodeConfig``) and ``store`` (``phasenode.persist.Store``).

    ``await node.main()`` runs it; ``start()`` / ``stop()`` for tests.
    ``clock`` is ticks_ms; ``watchdog`` False builds no watchdog (tests that
    must not be reset). ``log`` gets one line per notable thing (never keys).

    ``speed``: clock milliseconds per wall millisecond, 1 on a board. The
    simulated site runs the node on a site clock ``speed`` times faster
    (``phasenode.hal.host.HostHal.clock``): the node's own periods (sampling,
    relay dead time, dwell, budgets, heartbeats, command deadlines) are clock
    time and are slept as ``ms / speed`` wall milliseconds, while what is bound
    to a wire or a radio (meter reply timeouts, the RS-485 idle gap, a LoRa
    receive window, the watchdog's period) stays wall time.
    """

    def __init__(
        self, board, hal, config, store, settings=None, clock=ticks_ms, watchdog=True, log=None, random=None, speed=1
    ):
        if not isinstance(speed, (int, float)) or isinstance(speed, bool) or speed < 1:
            raise AppError("speed must be a number >= 1, got %s" % quote(speed))
        self.board = board
        self.config = config
        self.settings = s = settings if settings is not None else Settings.from_config(config)
        self._clock = clock
        self.speed = speed
        self._log = log
        now = clock()
        self.events = EventQueue()
        # Relays first: the controller opens every relay before anything else can fail.
        self.relay = None
        if board.relays is not None:
            load, save = store.relay_storage()
            if board.relays.kind == "solid-state":
                # A solid-state phase selector: transfers sequenced on the board's zero crossings.
                relay = SolidStateController(
                    hal.relay_pins(),
                    board.relays.active_high,
                    load,
                    save,
                    now,
                    config.rules_for("solid-state"),
                    config.home_phase,
                    conducting=hal.conducting,
                )
                hal.on_zero_cross(lambda: relay.zero_cross(clock()))
                self.relay = relay
            else:
                # A sense of the house side, where the board has one, catches a welded contact.
                sense = hal.relay_sense() if hasattr(hal, "relay_sense") else None
                self.relay = RelayController(
                    hal.relay_pins(),
                    board.relays.active_high,
                    load,
                    save,
                    now,
                    config.rules_for("mechanical"),
                    config.home_phase,
                    sense_open=sense,
                    clock=clock,
                )
        self.checks = Checks(config.limits, self.relay, self.events, now, s.set_samples, s.clear_samples)
        self.meter = None
        if board.meter_uart is not None:
            self.meter = Pzem(
                hal.meter_uart(), address=s.meter_address, timeout_ms=s.meter_timeout_ms, retries=s.meter_retries
            )
        self._m = Measurement()
        self.local_only = None
        self.session = None
        self.links = []
        self.rs485 = None
        self.lora = None
        try:
            secret = store.read_secret(config)
            counter = SequenceCounter(*store.sequence_storage(config.seq_name), block=s.seq_block)
            keys = NodeKeys(secret, config.address)
        except (PhasecoreError, OSError) as e:
            self.local_only = str(e)
            self._say("phasenode: local only, no link: %s" % e)
        else:
            self.session = Session(
                keys.node_context(),
                counter,
                store.pi_seq_storage(config.key_generation),
                store.oplock_storage(),
                self.relay,
                self.checks,
                self.events,
                now,
                s.heartbeat_s,
                s.rx_persist_s,
                answer_heartbeats=board.bus_uart is not None or s.lora_polled == 1,
                random=random,
                ota=self.updater,
            )
            if self.session.rx_lost:
                self._say("phasenode: the Pi's sequence record is unreadable: commands refused until rekeyed")
            self._build_links(board, hal, config, s)
        # A link that answers polls wants the next reading sealed before the poll comes.
        self._answers_polls = self.session is not None and (
            self.rs485 is not None or (self.lora is not None and self.lora.polled)
        )
        self.wdt = None
        self._want_wdt = watchdog
        self._hal = hal
        self._store = store
        self._ota = None
        if self._boot_needs_updater():
            self.updater()
        self._tasks = []
        self.cycles = 0
        self.meter_errors = 0
        self.unhealthy = 0
        self.beat_sample = now
        self.beat_relay = now

    def _build_links(self, board, hal, config, s):
        from phasenode.link_rs485 import Rs485Link

        if board.bus_uart is not None:
            self.rs485 = Rs485Link(
                hal.bus_uart(),
                self.session,
                config.address,
                board.bus_uart.baud,
                s.bus_poll_ms,
                clock=self._clock,
                speed=self.speed,
            )
            self.links.append(self.rs485)
        if board.lora is not None:
            # A radio that cannot be used costs the link, never the relay restore and the checks.
            if board.lora.chip != "sx1276":
                self.local_only = "%s: lora.chip %s has no driver yet (sx1276 only)" % (
                    board.source,
                    quote(board.lora.chip),
                )
                self._say("phasenode: no LoRa link: " + self.local_only)
                return
            from phasenode.link_lora import DutyCycle, LoraLink, ReportPolicy
            from phaseradio.sx127x import SX127x

            radio = SX127x(
                hal.lora_spi(),
                freq_hz=board.lora.freq_hz,
                sf=s.lora_sf,
                bw_hz=s.lora_bw_hz,
                cr=s.lora_cr,
                tx_power_dbm=board.lora.tx_power_dbm,
            )
            try:
                hal.lora_reset()
                radio.init()
            except OSError as e:  # RadioError: no chip answering on the SPI bus
                self.local_only = "LoRa radio: %s" % e
                self._say("phasenode: no LoRa link: %s" % e)
                return
            policy = ReportPolicy(s.lora_delta_ma, s.lora_delta_pm, s.lora_report_min_s, s.lora_report_max_s)
            self.lora = LoraLink(
                radio,
                self.session,
                config.address,
                policy,
                DutyCycle(s.lora_duty_pm),
                s.lora_rx_window_ms,
                clock=self._clock,
                polled=s.lora_polled == 1,
                speed=self.speed,
            )
            self.links.append(self.lora)

    # --- firmware updates ---------------------------------------------------------------

    def _flash(self):
        import phaseboot

        return phaseboot.PosixFs(self._store.root, self._store._fsync)

    def _boot_needs_updater(self):
        try:
            import phaseboot
        except ImportError:
            return False
        st = phaseboot.load(self._flash())
        if st["trial"] is None and st["reported"]:
            # No update under way: keep no boot selector in the heap (an update imports it again).
            import sys

            sys.modules.pop("phaseboot", None)
            return False
        return True

    def updater(self):
        """The node's ``phasenode.ota.Updater`` (made on first use); None without ``phaseboot`` on the flash."""
        if self._ota is None:
            try:
                import phaseboot  # noqa: F401 - the boot selector at the flash root: no updates without it
            except ImportError:
                return None
            from phasenode import ota

            self._ota = ota.Updater(
                self._flash(),
                self.config.release_key,
                ota.target_of(self.board),
                self.events,
                self.session,
                self.relay,
                reset=getattr(self._hal, "reset", None),
                confirm_s=self.settings.ota_confirm_s,
                now_ms=self._clock(),
            )
        return self._ota

    def _say(self, line):
        if self._log is not None:
            self._log(line)

    # --- running -------------------------------------------------------------------

    def start(self, serve_links=True):
        """Create the tasks (inside a running loop); returns them.

        ``serve_links`` False leaves the links' receive loops out: the caller
        drives them (the simulated site's bus calls ``rs485.service`` as bytes
        arrive, instead of 50 nodes each polling their UART every 2 ms).
        """
        if self._want_wdt and self.wdt is None:
            # Only now: a chip watchdog cannot be stopped once started.
            self.wdt = self._hal.watchdog(self.settings.watchdog_ms or None)
        t = [asyncio.create_task(self._sample_loop()), asyncio.create_task(self._supervise())]
        if self.relay is not None:
            t.append(asyncio.create_task(self._relay_loop()))
        if serve_links:
            for link in self.links:
                t.append(asyncio.create_task(link.run()))
        self._tasks = t
        return t

    def stop(self):
        for t in self._tasks:
            t.cancel()
        self._tasks = []

    async def main(self):
        """Run until cancelled (on the node: for ever)."""
        tasks = self.start()
        try:
            await asyncio.gather(*tasks)
        finally:
            self.stop()

    # --- tasks ---------------------------------------------------------------------------

    def _wall_ms(self, ms):
        """Wall milliseconds that ``ms`` of the node's clock take (``ms`` itself at speed 1)."""
        if self.speed == 1:
            return ms
        return int(ms / self.speed)

    async def _sample_loop(self):
        clock = self._clock
        period = self.settings.sample_ms
        while True:
            t0 = clock()
            await self.sample_once()
            d = self._wall_ms(period - ticks_diff(clock(), t0))
            await sleep_ms(d if d > 0 else 0)

    async def sample_once(self):
        """One sampling cycle: read, check, hand over, prepare the reading."""
        m = self._m
        checks = self.checks
        clock = self._clock
        self.beat_sample = clock()
        meter = self.meter
        valid = False
        if meter is None:
            checks.tick(clock())
        else:
            field = -1  # the implausible field, or -1 for no usable reply
            ok = False
            try:
                await meter.read(m)
                ok = True
            except ImplausibleReading as e:
                field = checks.field_code(e.field)
                self.meter_errors += 1
            except METER_ERRORS:
                self.meter_errors += 1
            except OSError:
                self.meter_errors += 1  # the UART itself failed: same as a silent meter
            now = clock()
            if ok:
                valid = checks.sample(m, now)
            else:
                checks.failed(now, field)
        now = clock()
        relay = self.relay
        if relay is not None:
            relay.tick(now)
            relay.drain_events(self.events)
        s = self.session
        if s is not None:
            if valid:
                s.set_measurement(
                    m.voltage_dv, m.current_ma, m.power_dw, m.energy_wh, m.frequency_dhz, m.pf_centi, m.alarm
                )
            elif not checks.meter_ok:
                s.clear_measurement()
            if self._answers_polls:
                s.prepare(now)
            else:
                s.advance(now)
        self.cycles += 1
        return valid

    async def _relay_loop(self):
        relay = self.relay
        clock = self._clock
        while True:
            now = clock()
            self.beat_relay = now
            was = relay.state
            relay.tick(now)
            if relay.state != was and self._answers_polls:
                # A move or the restore just ended: the next poll gets the new phase at once.
                self.session.prepare(now)
            w = self._wall_ms(relay.wait_ms())
            await sleep_ms(w if 0 < w < _RELAY_TICK_MS else _RELAY_TICK_MS)

    def healthy(self, now_ms):
        """True while every task has run recently enough (the watchdog is fed only then).

        Ages are judged in wall milliseconds (a hung task is a wall-time matter).
        """
        s = self.settings
        sample_limit = self._wall_ms(s.sample_ms) + s.meter_timeout_ms * (s.meter_retries + 1) + _SLACK_MS
        if self._wall_ms(ticks_diff(now_ms, self.beat_sample)) > sample_limit:
            return False
        if self.relay is not None and self._wall_ms(ticks_diff(now_ms, self.beat_relay)) > _RELAY_TICK_MS + _SLACK_MS:
            return False
        if self.rs485 is not None:
            rs = self.rs485
            if not rs.running or self._wall_ms(ticks_diff(now_ms, rs.beat)) > _SLACK_MS:
                return False
        if self.lora is not None:
            lo = self.lora
            if not lo.running or self._wall_ms(ticks_diff(now_ms, lo.beat)) > s.lora_rx_window_ms + 4 * _SLACK_MS:
                return False
        return True

    async def _supervise(self):
        clock = self._clock
        # Give the tasks one round to start before judging them.
        await sleep_ms(0)
        while True:
            now = clock()
            if self.healthy(now):
                if self.wdt is not None:
                    self.wdt.feed()
            else:
                self.unhealthy += 1
            if self._ota is not None:
                self._ota.tick(now)
            await sleep_ms(_SUPERVISE_MS)


def run(board, hal, config, store, settings=None, log=print):
    """Build the node and run it for ever: what ``phasenode.startup.main`` calls.

    A HAL with ``clock()`` (the virtual board on a simulated site) gives the
    node's clock and its speed; any other runs on ``ticks_ms`` at speed 1.
    """
    clock, speed = hal.clock() if hasattr(hal, "clock") else (ticks_ms, 1)
    node = Node(board, hal, config, store, settings, log=log, clock=clock, speed=speed)
    log(
        "phasenode: running, %s%s"
        % (", ".join(type(x).__name__ for x in node.links) or "no link", " (local only)" if node.local_only else "")
    )
    asyncio.run(node.main())
    return 0
