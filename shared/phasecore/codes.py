"""Every code that crosses a wire or a tier, with its name: the one table the node, the Pi and the tools read.

A phase, a message kind, a command operation, an ack outcome or reason, an
event code or a status bit has one number and one name from the node's relay
controller to the server's database: ``phasecore.msg`` (the schema) re-exports
these, ``phasenode`` (relay controller, session, anomaly checks) and
``phasegate`` (controller, journal) import them from here, and no module keeps
a table of its own. The one thing to know: the numbers are the wire's
(docs/protocol.md section 3), so a number here never changes meaning; a new
code takes a free number.

- Phases: ``PHASE_A`` 0, ``PHASE_B`` 1, ``PHASE_C`` 2, ``PHASE_NONE`` 3 (every
  relay open: a move's dead time, a fault, a node without relays), as in the
  reading, command, ack and heartbeat, and as the relay controller and its
  saved state (``relay.json`` format 2) count them; ``PHASE_NAMES`` by phase.
- Message kinds: ``READING`` 0 .. ``EVENT`` 5, ``OTA_DATA`` 6 (a chunk of a
  firmware bundle, Pi to node) and ``OTA_STATUS`` 7 (the node's download
  progress, node to Pi), ``KIND_NAMES``.
- Command operations: ``OP_MOVE`` 1 .. ``OP_REPORT`` 5, ``OP_OTA`` 6,
  ``OP_PAUSE`` 7 and ``OP_RESUME`` 8 (the Pi's own: an operator pauses or
  resumes the balancer of a whole transformer; a node answers UNSUPPORTED),
  ``OP_NAMES`` (a dict: 0 is no operation and must stay unknown to the
  schema); the OTA command's actions ``OTA_BEGIN`` 1, ``OTA_ACTIVATE`` 2,
  ``OTA_CANCEL`` 3, ``OTA_ACTIONS``; a node's download states ``OTA_IDLE``
  0 .. ``OTA_TRIAL`` 5, ``OTA_STATE_NAMES``; the rollback reasons
  ``RB_RESET`` 1 .. ``RB_BOOTS`` 4, ``ROLLBACK_NAMES``.
- Ack outcomes: ``ACK_DONE`` 0 .. ``ACK_UNSUPPORTED`` 4, ``OUTCOME_NAMES``.
- Ack reasons: ``R_OK`` 0 .. ``R_CONDITION_ACTIVE`` 11 are the relay
  controller's refusals (``RelayRefused.reason``; ``RELAY_REASONS`` of them),
  ``R_DEADLINE_PASSED`` 12 on the command handler's, before the relay is
  asked; ``REASON_NAMES`` by code. 32-47 are the node's refusals of a
  firmware update (``R_OTA_*``, in acks and in ``OTA_STATUS``), named in
  ``OTA_REASON_NAMES`` (a dict: the numbers leave 17-31 to the command
  handler).
- Event codes: 1-10 the relay controller's (``EV_RESTORED`` ..
  ``EV_LIVE_OPEN``), 16-31 the node's others (28-31 its firmware updates),
  32 on the Pi's (56-58 its roll-outs, 60-64 its plausibility guard and
  move verification, 65-66 its balancer paused and resumed); ``EVENT_NAMES`` (a dict: the codes are sparse, and
  unknown codes pass the schema). The values of
  ``NODE_QUARANTINED``/``NODE_RELEASED`` are ``Q_*`` (``QUARANTINE_REASONS``),
  those of ``READING_IMPLAUSIBLE`` index ``PLAUSIBILITY_CHECKS``.
- Status bits (reading, ack, heartbeat): ``ST_*``, ``STATUS_BITS`` names by
  bit, ``ST_LOCKED_MASK`` (any of them: moves are refused). The relay
  controller's lock-out bits ``LOCK_*`` are status bits 0-5 as they are
  (``LOCK_ALL``), so a node reports ``locks | extras``.

One numbering of phases everywhere: the relay controller, its file on flash
(``relay.json`` format 2), every message and every event's values (``MOVED``
from A to B is value 0, value2 1).

Portable (MicroPython and CPython): constants are ``const()``, tables tuples
where the codes are dense. The public names are the ones listed above (no
``__all__``: on a node that loads .mpy files it would be one more tuple in RAM).
"""

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


# ---------------------------------------------------------------- phases
PHASE_A = const(0)
PHASE_B = const(1)
PHASE_C = const(2)
PHASE_NONE = const(3)  # every relay open: the house is disconnected
PHASE_NAMES = ("A", "B", "C", "-")

# ---------------------------------------------------------------- message kinds (envelope header)
READING = const(0)
SUMMARY = const(1)
COMMAND = const(2)
ACK = const(3)
HEARTBEAT = const(4)
EVENT = const(5)
OTA_DATA = const(6)  # Pi -> node: one chunk of a firmware bundle (phasecore.ota)
OTA_STATUS = const(7)  # node -> Pi: where the node's download stands (phasecore.ota)
KIND_NAMES = ("reading", "summary", "command", "ack", "heartbeat", "event", "ota_data", "ota_status")

# ---------------------------------------------------------------- command operations
OP_MOVE = const(1)
OP_LOCK = const(2)
OP_UNLOCK = const(3)
OP_SET_LIMITS = const(4)
OP_REPORT = const(5)
OP_OTA = const(6)  # a firmware update step: the command's "ota" field says which (OTA_ACTIONS)
# 7-8: for the Pi itself (node 0 in an operator command): a node answers them UNSUPPORTED.
OP_PAUSE = const(7)  # pause the transformer's balancer: no automatic moves until RESUME
OP_RESUME = const(8)  # resume the transformer's balancer
OP_NAMES = {
    OP_MOVE: "MOVE",
    OP_LOCK: "LOCK",
    OP_UNLOCK: "UNLOCK",
    OP_SET_LIMITS: "SET_LIMITS",
    OP_REPORT: "REPORT",
    OP_OTA: "OTA",
    OP_PAUSE: "PAUSE",
    OP_RESUME: "RESUME",
}
# The OTA command's actions (command key 15, docs/ota.md).
OTA_BEGIN = const(1)  # start or resume the download of bundle ota_id (ota_size bytes, ota_chunk per chunk)
OTA_ACTIVATE = const(2)  # boot the downloaded, verified bundle at the next safe moment (trial boot)
OTA_CANCEL = const(3)  # drop the download (a trial boot in progress is not affected)
OTA_ACTIONS = {OTA_BEGIN: "BEGIN", OTA_ACTIVATE: "ACTIVATE", OTA_CANCEL: "CANCEL"}
# Where a node's download stands (OTA status key 2).
OTA_IDLE = const(0)  # nothing being downloaded
OTA_RECEIVING = const(1)  # chunks welcome; "next" says which
OTA_READY = const(2)  # every byte arrived and verified: ACTIVATE may boot it
OTA_REFUSED = const(3)  # refused; the status's reason says why
OTA_ACTIVATING = const(4)  # activated: the node reboots into it at the next safe moment
OTA_TRIAL = const(5)  # running the new version, not yet confirmed healthy
OTA_STATE_NAMES = ("IDLE", "RECEIVING", "READY", "REFUSED", "ACTIVATING", "TRIAL")
# Why a node went back to its previous version (OTA status key 6, EV_OTA_ROLLED_BACK's value).
RB_RESET = const(1)  # it reset (crash, watchdog) before confirming itself healthy
RB_HEALTH = const(2)  # no health within the deadline: no authenticated Pi contact, or the relay not restored
RB_APP = const(3)  # the firmware did not start, or its application stopped
RB_BOOTS = const(4)  # too many boots (power cuts) without confirmation
ROLLBACK_NAMES = ("-", "RESET", "HEALTH", "APP", "BOOTS")

# ---------------------------------------------------------------- ack outcomes
ACK_DONE = const(0)
ACK_REFUSED = const(1)
ACK_FAILED = const(2)  # tried, did not take
ACK_EXPIRED = const(3)
ACK_UNSUPPORTED = const(4)
OUTCOME_NAMES = ("DONE", "REFUSED", "FAILED", "EXPIRED", "UNSUPPORTED")

# ---------------------------------------------------------------- ack reasons
# 0-11: the relay controller's refusals (phasenode.relay.RelayRefused.reason).
R_OK = const(0)
R_INVALID_PHASE = const(1)  # target is not PHASE_A, PHASE_B or PHASE_C
R_SAME_PHASE = const(2)  # already on the target phase
R_BUSY = const(3)  # a move or the restore after boot is in progress
R_TWO_PHASES = const(4)  # read-back showed more than one relay closed: all opened, latched
R_LOCKED_OUT = const(5)  # a lock-out is set (or an operator lock)
R_DWELL = const(6)  # minimum dwell on the current phase not over
R_BUDGET_HOUR = const(7)  # max_per_hour moves in the last rolling hour
R_BUDGET_DAY = const(8)  # max_per_day moves in the last rolling 24 h
R_PERSIST = const(9)  # the intent (or the Pi's sequence number) could not be saved: nothing done
R_RELAY_FAULT = const(10)  # read-back mismatch, or the break was not verified: move aborted
R_CONDITION_ACTIVE = const(11)  # unlock refused: the condition still holds
RELAY_REASONS = const(12)  # codes below this are the relay controller's
# 12 on: the node's command handler (phasenode.session), before the relay is asked.
R_DEADLINE_PASSED = const(12)
R_STALE_REF = const(13)  # ref_seq older than the node's last phase change
R_WRONG_PHASE = const(14)  # expect_phase is not the node's phase
R_BAD_LIMITS = const(15)  # SET_LIMITS outside the installer's ranges
R_NO_TIME = const(16)  # no Pi heartbeat (no time) since boot
# 32-47: the node's refusals of a firmware update (phasenode.ota), in acks and OTA_STATUS.
R_OTA_NO_KEY = const(32)  # no release key provisioned (config.json release_key): updates refused
R_OTA_BUSY = const(33)  # a trial boot is not confirmed yet, or another step is in progress
R_OTA_BAD_BUNDLE = const(34)  # the bundle's layout, manifest or file table is malformed or over a limit
R_OTA_WRONG_KEY = const(35)  # signed by another key than the node's release key (key id differs)
R_OTA_BAD_SIGNATURE = const(36)  # the manifest's signature does not verify under the release key
R_OTA_WRONG_TARGET = const(37)  # built for another target (chip/host) or .mpy version
R_OTA_DOWNGRADE = const(38)  # the version is below the running firmware's minimum
R_OTA_TOO_OLD = const(39)  # the running version is below the bundle's minimum: install the one between
R_OTA_SAME_VERSION = const(40)  # that version is already running
R_OTA_BAD_HASH = const(41)  # a file or the file table does not match its SHA-256 in the manifest
R_OTA_NO_SPACE = const(42)  # the bundle is larger than the node accepts or its flash holds
R_OTA_FLASH = const(43)  # writing to flash failed
R_OTA_NOT_READY = const(44)  # ACTIVATE before the whole bundle arrived and verified
R_OTA_UNKNOWN = const(45)  # a chunk or ACTIVATE names another bundle than the one being downloaded
OTA_REASON_NAMES = {
    R_OTA_NO_KEY: "OTA_NO_KEY",
    R_OTA_BUSY: "OTA_BUSY",
    R_OTA_BAD_BUNDLE: "OTA_BAD_BUNDLE",
    R_OTA_WRONG_KEY: "OTA_WRONG_KEY",
    R_OTA_BAD_SIGNATURE: "OTA_BAD_SIGNATURE",
    R_OTA_WRONG_TARGET: "OTA_WRONG_TARGET",
    R_OTA_DOWNGRADE: "OTA_DOWNGRADE",
    R_OTA_TOO_OLD: "OTA_TOO_OLD",
    R_OTA_SAME_VERSION: "OTA_SAME_VERSION",
    R_OTA_BAD_HASH: "OTA_BAD_HASH",
    R_OTA_NO_SPACE: "OTA_NO_SPACE",
    R_OTA_FLASH: "OTA_FLASH",
    R_OTA_NOT_READY: "OTA_NOT_READY",
    R_OTA_UNKNOWN: "OTA_UNKNOWN",
}
REASON_NAMES = (
    "OK",
    "INVALID_PHASE",
    "SAME_PHASE",
    "BUSY",
    "TWO_PHASES",
    "LOCKED_OUT",
    "DWELL",
    "BUDGET_HOUR",
    "BUDGET_DAY",
    "PERSIST",
    "RELAY_FAULT",
    "CONDITION_ACTIVE",
    "DEADLINE_PASSED",
    "STALE_REF",
    "WRONG_PHASE",
    "BAD_LIMITS",
    "NO_TIME",
)

# ---------------------------------------------------------------- events
# 1-10: the relay controller's, (value, value2) as it gives them.
EV_RESTORED = const(1)  # (phase, 0): the restore after boot closed this phase
EV_ROLLED_BACK = const(2)  # (phase, intent): a move was cut by a reboot; back on phase
EV_STATE_LOST = const(3)  # (phase, 0): saved state unreadable; home phase restored, STATE_LOST set
EV_MOVED = const(4)  # (from, to)
EV_ABORTED = const(5)  # (from, to): break not verified, back on from, RELAY_FAULT set
EV_LOCKED = const(6)  # (bits newly set, all bits)
EV_UNLOCKED = const(7)  # (bits cleared, all bits)
EV_PIN_MISMATCH = const(8)  # (mask of relays read closed, bit i = phase i; expected phase): all opened
EV_PERSIST_FAILED = const(9)  # (what, detail): a save failed; what 0 relay state, 1 Pi sequence, 2 operator lock
EV_LIVE_OPEN = const(10)  # (phase, 0): the restore found the house live with all open: nothing made
# 16-31: the node's others.
EV_BOOT = const(16)
EV_WATCHDOG_RESET = const(17)
EV_BROWNOUT = const(18)
EV_METER_SILENT = const(19)
EV_METER_BACK = const(20)
EV_IMPLAUSIBLE_READING = const(21)
EV_AUTH_FAILED = const(22)
EV_REPLAY_DROPPED = const(23)
EV_LIMITS_CHANGED = const(24)
# 28-31: the node's firmware updates (phasenode.ota, phaseboot); versions packed as phasecore.ota.pack_version.
EV_OTA_REFUSED = const(28)  # (R_OTA_* reason, bundle id): a download or activation refused
EV_OTA_READY = const(29)  # (version, bundle id): the whole bundle arrived and verified
EV_OTA_CONFIRMED = const(30)  # (version, 0): the trial boot of a new version confirmed itself healthy
EV_OTA_ROLLED_BACK = const(31)  # (rollback reason, version): the new version did not confirm; back on the old
# 32 on: the Pi's.
EV_NODE_ONLINE = const(32)
EV_NODE_STALE = const(33)
EV_NODE_OFFLINE = const(34)
EV_MOVE_NOT_VERIFIED = const(35)
EV_NODE_LOCKED_OUT = const(36)
EV_UNBALANCE_HIGH = const(37)
EV_UNBALANCE_CLEARED = const(38)
EV_TRANSFORMER_METER_FAULT = const(39)
EV_TRANSFORMER_METER_BACK = const(40)
EV_UPLINK_DOWN = const(41)
EV_UPLINK_UP = const(42)
EV_BUFFER_DROPPED = const(43)
EV_MOVE_VERIFIED = const(44)
EV_MOVE_REFUSED = const(45)
EV_COMMAND_UNANSWERED = const(46)
EV_NODE_SUSPENDED = const(47)
EV_OPERATOR_REFUSED = const(48)
# 56-58: the Pi's firmware roll-outs (phasegate.ota).
EV_OTA_NODE_UPDATED = const(56)  # (version): the node runs the roll-out's version, confirmed
EV_OTA_NODE_FAILED = const(57)  # (R_OTA_* reason or rollback reason + 256): the node did not update
EV_OTA_HALTED = const(58)  # (nodes failed): the roll-out stopped (a canary or a wave failed)
# 60 on: the Pi's plausibility guard (phasegate.plausibility) and move verification.
EV_NODE_QUARANTINED = const(60)  # (reason, 0): QUARANTINE_REASONS[reason]; out of balancing, alarmed
EV_NODE_RELEASED = const(61)  # (reason, 0): the quarantine of that reason ended (time or operator)
EV_ENERGY_BACKWARDS = const(62)  # (Wh the counter went back, 0): no reset event came before it
EV_READING_IMPLAUSIBLE = const(63)  # (check, 0): PLAUSIBILITY_CHECKS[check]; not used for balancing
EV_MOVE_UNCONFIRMED = const(64)  # (command id, 0): no authentic evidence either way; short suspension
# 65 on: the Pi's balancer, paused and resumed by an operator (OP_PAUSE, OP_RESUME to node 0).
EV_BALANCER_PAUSED = const(65)  # (0, 0): no automatic moves until resumed (operator moves still go)
EV_BALANCER_RESUMED = const(66)  # (seconds it was paused, 0 if unknown)
EVENT_NAMES = {
    EV_RESTORED: "RESTORED",
    EV_ROLLED_BACK: "ROLLED_BACK",
    EV_STATE_LOST: "STATE_LOST",
    EV_MOVED: "MOVED",
    EV_ABORTED: "ABORTED",
    EV_LOCKED: "LOCKED",
    EV_UNLOCKED: "UNLOCKED",
    EV_PIN_MISMATCH: "PIN_MISMATCH",
    EV_PERSIST_FAILED: "PERSIST_FAILED",
    EV_LIVE_OPEN: "LIVE_OPEN",
    EV_BOOT: "BOOT",
    EV_WATCHDOG_RESET: "WATCHDOG_RESET",
    EV_BROWNOUT: "BROWNOUT",
    EV_METER_SILENT: "METER_SILENT",
    EV_METER_BACK: "METER_BACK",
    EV_IMPLAUSIBLE_READING: "IMPLAUSIBLE_READING",
    EV_AUTH_FAILED: "AUTH_FAILED",
    EV_REPLAY_DROPPED: "REPLAY_DROPPED",
    EV_LIMITS_CHANGED: "LIMITS_CHANGED",
    EV_OTA_REFUSED: "OTA_REFUSED",
    EV_OTA_READY: "OTA_READY",
    EV_OTA_CONFIRMED: "OTA_CONFIRMED",
    EV_OTA_ROLLED_BACK: "OTA_ROLLED_BACK",
    EV_NODE_ONLINE: "NODE_ONLINE",
    EV_NODE_STALE: "NODE_STALE",
    EV_NODE_OFFLINE: "NODE_OFFLINE",
    EV_MOVE_NOT_VERIFIED: "MOVE_NOT_VERIFIED",
    EV_NODE_LOCKED_OUT: "NODE_LOCKED_OUT",
    EV_UNBALANCE_HIGH: "UNBALANCE_HIGH",
    EV_UNBALANCE_CLEARED: "UNBALANCE_CLEARED",
    EV_TRANSFORMER_METER_FAULT: "TRANSFORMER_METER_FAULT",
    EV_TRANSFORMER_METER_BACK: "TRANSFORMER_METER_BACK",
    EV_UPLINK_DOWN: "UPLINK_DOWN",
    EV_UPLINK_UP: "UPLINK_UP",
    EV_BUFFER_DROPPED: "BUFFER_DROPPED",
    EV_MOVE_VERIFIED: "MOVE_VERIFIED",
    EV_MOVE_REFUSED: "MOVE_REFUSED",
    EV_COMMAND_UNANSWERED: "COMMAND_UNANSWERED",
    EV_NODE_SUSPENDED: "NODE_SUSPENDED",
    EV_OPERATOR_REFUSED: "OPERATOR_REFUSED",
    EV_OTA_NODE_UPDATED: "OTA_NODE_UPDATED",
    EV_OTA_NODE_FAILED: "OTA_NODE_FAILED",
    EV_OTA_HALTED: "OTA_HALTED",
    EV_NODE_QUARANTINED: "NODE_QUARANTINED",
    EV_NODE_RELEASED: "NODE_RELEASED",
    EV_ENERGY_BACKWARDS: "ENERGY_BACKWARDS",
    EV_READING_IMPLAUSIBLE: "READING_IMPLAUSIBLE",
    EV_MOVE_UNCONFIRMED: "MOVE_UNCONFIRMED",
    EV_BALANCER_PAUSED: "BALANCER_PAUSED",
    EV_BALANCER_RESUMED: "BALANCER_RESUMED",
}
# Values of NODE_QUARANTINED and NODE_RELEASED: why the Pi stopped trusting a node's readings.
Q_IMPLAUSIBLE = const(0)  # repeated readings that break physics or the datasheet (PLAUSIBILITY_CHECKS)
Q_METER_DYNAMICS = const(1)  # its claimed current changes do not show in the transformer meter
Q_METER_LEVEL = const(2)  # the only node that can explain a phase claiming more than the meter sees
Q_INFLUENCE = const(3)  # its claims above its learned envelope moved influence_moves other houses
Q_OPERATOR = const(4)  # (NODE_RELEASED only) an operator ended the quarantine
QUARANTINE_REASONS = ("IMPLAUSIBLE", "METER_DYNAMICS", "METER_LEVEL", "INFLUENCE", "OPERATOR")
# Values of READING_IMPLAUSIBLE: the check a node's reading failed.
PLAUSIBILITY_CHECKS = (
    "VOLTAGE",  # outside the site's plausible range
    "FREQUENCY",  # outside the site's plausible range
    "CURRENT",  # above what the house's supply can carry
    "POWER",  # |P| and V x I x pf disagree beyond the PZEM-004T's accuracy
    "ENERGY_BACKWARDS",  # the energy counter went down without a reset event
    "ENERGY_JUMP",  # the energy counter rose faster than the supply allows
    "FREQUENCY_DISAGREES",  # far from the frequency every other node measures
)

# ---------------------------------------------------------------- status bits
ST_OVERCURRENT = const(0x001)  # locked out: current above the node's limit (latched)
ST_METER = const(0x002)  # locked out: meter silent or implausible
ST_OVERVOLTAGE = const(0x004)  # locked out: voltage above the node's limit
ST_UNDERVOLTAGE = const(0x008)  # locked out: voltage below the node's limit
ST_RELAY_FAULT = const(0x010)  # locked out: relay read-back mismatch or break not verified (latched)
ST_STATE_LOST = const(0x020)  # locked out: persisted relay state unreadable at boot (latched)
ST_OPERATOR_LOCK = const(0x040)  # locked by a LOCK command until UNLOCK
ST_METER_ALARM = const(0x080)  # the meter's own power alarm (PZEM-004T register 0x0009)
ST_SWITCHING = const(0x100)  # a move or the restore after boot is in progress
ST_BUDGET = const(0x200)  # the switching budget of the hour or the day is spent
ST_REBOOTED = const(0x400)  # first message since the node booted
ST_NOT_SWITCHABLE = const(0x800)  # measure-only node (no relays, or a three-phase house)
ST_LOCKED_MASK = const(0x07F)  # any of these: the node refuses moves
STATUS_BITS = (
    "OVERCURRENT",
    "METER",
    "OVERVOLTAGE",
    "UNDERVOLTAGE",
    "RELAY_FAULT",
    "STATE_LOST",
    "OPERATOR_LOCK",
    "METER_ALARM",
    "SWITCHING",
    "BUDGET",
    "REBOOTED",
    "NOT_SWITCHABLE",
)

# The relay controller's lock-out bits are the status bits 0-5, so a node
# reports its locks as they are; names are STATUS_BITS[0..5].
LOCK_OVERCURRENT = ST_OVERCURRENT
LOCK_METER = ST_METER
LOCK_OVERVOLTAGE = ST_OVERVOLTAGE
LOCK_UNDERVOLTAGE = ST_UNDERVOLTAGE
LOCK_RELAY_FAULT = ST_RELAY_FAULT
LOCK_STATE_LOST = ST_STATE_LOST
LOCK_ALL = const(0x03F)
