"""Register map of the match-action pipeline (AXI4-Lite, 32-bit registers).

Entries are written through a staging area: the key, mask, action, arguments, priority and meter
of one entry go into ``KEY``/``MASK``/``ACTION``/``ARGS``/``PRIORITY``/``METER_*``, then a write
to ``COMMIT`` names the stage and slot and installs (or clears) it in one cycle, so a frame
never sees half an entry. An install into a ternary or LPM stage that does not keep the counters
(a new entry, not a modify) is first swept into the stage's TCAM memories: that write is
answered when the entry is in, some 2,000 cycles later (frames flow meanwhile); a modify keeps
the slot's key and mask, whatever ``KEY`` and ``MASK`` hold. Counters and meter buckets are read
by writing ``SELECT`` and then reading ``PACKETS_*``, ``BYTES_*`` and ``METER_*_TOKENS``; a
64-bit counter's low word is read first, and its high word is the one latched with it (no torn
reads). A write of a value wider than its register (``ACTION`` 4 bits, ``PRIORITY`` and
``SELECT`` 16, ``METER_CIR``/``PIR`` 20, ``METER_CBS``/``PBS`` 21) is refused with SLVERR and
changes nothing, as is a ``COMMIT`` that installs an action number its stage does not have, or
installs into an LPM stage a priority above its field's width (an LPM priority is ``width -
prefix length``).
"""

from nicsim.rtl.regs import Register

__all__ = [
    "MA_ID",
    "REGISTERS",
    "REG_ID", "REG_STAGES", "REG_FRAMES", "REG_DROPS",
    "REG_KEY", "REG_MASK", "REG_ARGS", "REG_ACTION", "REG_PRIORITY",
    "REG_METER_CIR", "REG_METER_PIR", "REG_METER_CBS", "REG_METER_PBS",
    "REG_COMMIT", "REG_SELECT", "REG_PACKETS_LO", "REG_PACKETS_HI", "REG_BYTES_LO",
    "REG_BYTES_HI", "REG_METER_TC", "REG_METER_TP",
    "KEY_WORDS", "ARG_WORDS",
    "COMMIT_INSTALL", "COMMIT_KEEP_COUNTERS", "COMMIT_KEEP_METER", "SELECT_MISS",
    "commit_word", "select_word",
]

MA_ID = 0x4D415401  # "MAT", version 1
KEY_WORDS = 10  # 320-bit keys
ARG_WORDS = 4  # 128 bits of action data

REG_ID = 0x000
REG_STAGES = 0x004
REG_FRAMES = 0x008
REG_DROPS = 0x00C
REG_KEY = 0x040
REG_MASK = 0x080
REG_ARGS = 0x0C0
REG_ACTION = 0x0D0
REG_PRIORITY = 0x0D4
REG_METER_CIR = 0x0D8
REG_METER_PIR = 0x0DC
REG_METER_CBS = 0x0E0
REG_METER_PBS = 0x0E4
REG_COMMIT = 0x0F0
REG_SELECT = 0x100
REG_PACKETS_LO = 0x104
REG_PACKETS_HI = 0x108
REG_BYTES_LO = 0x10C
REG_BYTES_HI = 0x110
REG_METER_TC = 0x114
REG_METER_TP = 0x118

COMMIT_INSTALL = 1 << 16  # set: install the staged entry; clear: empty the slot
COMMIT_KEEP_COUNTERS = 1 << 17  # keep the slot's counters (modify)
COMMIT_KEEP_METER = 1 << 18  # keep the slot's meter buckets (modify, same meter)
SELECT_MISS = 1 << 15  # SELECT: the stage's miss counters instead of a slot's


def commit_word(stage, index, install=True, keep_counters=False, keep_meter=False):
    """Return the ``COMMIT`` value for ``stage`` and slot ``index``."""
    return (index | stage << 12 | (COMMIT_INSTALL if install else 0)
            | (COMMIT_KEEP_COUNTERS if keep_counters else 0)
            | (COMMIT_KEEP_METER if keep_meter else 0))


def select_word(stage, index=0, miss=False):
    """Return the ``SELECT`` value for a slot's (or the stage's miss) counters."""
    return index | stage << 12 | (SELECT_MISS if miss else 0)


REGISTERS = (
    Register("ID", REG_ID, 1, "ro", f"constant {MA_ID:#010x}"),
    Register("STAGES", REG_STAGES, 1, "ro", "stages of this build"),
    Register("FRAMES", REG_FRAMES, 1, "ro", "frames in (wraps)"),
    Register("DROPS", REG_DROPS, 1, "ro", "frames dropped (wraps)"),
    Register("KEY", REG_KEY, KEY_WORDS, "rw",
             "staged key; word i = key bits [32i+31:32i], the first key field most significant"),
    Register("MASK", REG_MASK, KEY_WORDS, "rw", "staged mask (ternary and LPM stages)"),
    Register("ARGS", REG_ARGS, ARG_WORDS, "rw",
             "staged action data; the first parameter in the least significant bits"),
    Register("ACTION", REG_ACTION, 1, "rw", "staged action number (its place in the table's "
                                            "actions list)"),
    Register("PRIORITY", REG_PRIORITY, 1, "rw", "staged priority (ternary/LPM: smallest wins)"),
    Register("METER_CIR", REG_METER_CIR, 1, "rw", "staged meter: committed rate, 1/2**16 B/ns"),
    Register("METER_PIR", REG_METER_PIR, 1, "rw", "staged meter: peak rate, 1/2**16 B/ns"),
    Register("METER_CBS", REG_METER_CBS, 1, "rw", "staged meter: committed burst, bytes"),
    Register("METER_PBS", REG_METER_PBS, 1, "rw", "staged meter: peak burst, bytes"),
    Register("COMMIT", REG_COMMIT, 1, "rw",
             "[9:0] slot, [14:12] stage, [16] install (else clear), [17] keep counters "
             "(a modify: a ternary/LPM slot keeps its key and mask), [18] keep meter; a stage "
             "or slot out of range, or an install of an action number the stage lacks: error; "
             "an install without [17] into a ternary/LPM stage is answered once its TCAM sweep "
             "is done (about 2,000 cycles)"),
    Register("SELECT", REG_SELECT, 1, "rw", "[9:0] slot, [14:12] stage, [15] miss counters"),
    Register("PACKETS_LO", REG_PACKETS_LO, 1, "ro", "selected packets [31:0]"),
    Register("PACKETS_HI", REG_PACKETS_HI, 1, "ro",
             "selected packets [63:32], latched by the read of PACKETS_LO"),
    Register("BYTES_LO", REG_BYTES_LO, 1, "ro", "selected bytes [31:0]"),
    Register("BYTES_HI", REG_BYTES_HI, 1, "ro",
             "selected bytes [63:32], latched by the read of BYTES_LO"),
    Register("METER_TC", REG_METER_TC, 1, "ro", "selected meter committed bucket, bytes"),
    Register("METER_TP", REG_METER_TP, 1, "ro", "selected meter peak bucket, bytes"),
)
