"""LoRa time on air (Semtech SX127x/SX126x datasheet formula, AN1200.13).

Airtime decides whether 100 nodes fit one channel (pure ALOHA saturates near
18% utilisation) and what a node may send under a duty-cycle limit (ETSI EN 300
220: 1% in most of the EU868 sub-bands; India's 865-867 MHz band has no duty
cycle limit but the channel is shared all the same).

All times are in microseconds as ints, so the node computes them with no
floats and no allocation.
"""

from phasecore.errors import quote

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


EXPLICIT_HEADER = const(0)
IMPLICIT_HEADER = const(1)


def symbol_time_us(sf, bw_hz):
    """Duration of one chirp: 2**SF / BW."""
    return (1 << sf) * 1000000 // bw_hz


def airtime_us(
    payload_len, sf=7, bw_hz=125000, cr=1, preamble=8, crc=True, header=EXPLICIT_HEADER, low_dr_optimize=None
):
    """Time on air of one LoRa packet with ``payload_len`` PHY payload bytes.

    ``cr`` is the coding-rate index 1..4 for 4/5..4/8. Low data rate
    optimisation defaults to on when a symbol lasts more than 16 ms (SF11/SF12
    at 125 kHz), as the radios require.
    """
    if not 6 <= sf <= 12:
        raise ValueError("spreading factor %s outside 6..12" % (quote(sf),))
    if not 1 <= cr <= 4:
        raise ValueError("coding rate index %s outside 1..4 (4/5..4/8)" % (quote(cr),))
    if not 0 <= payload_len <= 255:
        raise ValueError("LoRa payload length %s outside 0..255" % (quote(payload_len),))
    t_sym_ns = (1 << sf) * 1000000000 // bw_hz
    if low_dr_optimize is None:
        low_dr_optimize = t_sym_ns > 16000000
    de = 1 if low_dr_optimize else 0
    ih = 1 if header == IMPLICIT_HEADER else 0
    num = 8 * payload_len - 4 * sf + 28 + (16 if crc else 0) - 20 * ih
    den = 4 * (sf - 2 * de)
    blocks = -(-num // den) if num > 0 else 0  # ceil for positive numerators
    payload_symbols = 8 + blocks * (cr + 4)
    # Preamble: programmed symbols + 4.25 symbols of sync word and SFD.
    total_ns = (preamble * 4 + 17) * t_sym_ns // 4 + payload_symbols * t_sym_ns
    return total_ns // 1000


def utilisation(senders, payload_len, interval_s, **radio):
    """Share of channel time used when ``senders`` each send one packet per ``interval_s``."""
    return senders * airtime_us(payload_len, **radio) / (interval_s * 1000000.0)
