"""Register maps: one table per block, read by the gateware, the host drivers and the docs.

A block publishes ``REGISTERS``, a tuple of :class:`Register`. The same table decodes accesses
in the gateware, gives drivers and testbenches their offsets (:func:`offset_of`) and prints the
documentation (``nicsim rtl regs DESIGN``).
"""

from dataclasses import dataclass

__all__ = ["Register", "offset_of"]


@dataclass(frozen=True)
class Register:
    """One 32-bit register, or an array of consecutive ones.

    Members
    -------
    name : str
        Register name.
    offset : int
        Byte address of the first register.
    count : int or None
        Number of consecutive 32-bit registers (``None``: set by a parameter of the instance).
    access : str
        ``"ro"`` or ``"rw"``; writes to ``"ro"`` registers and accesses to unmapped addresses
        are answered with an error (AXI4-Lite SLVERR).
    doc : str
        Contents, reset value and what the block rejects with an error.
    """

    name: str
    offset: int
    count: int | None
    access: str
    doc: str


def offset_of(registers, name, index=0):
    """Return the byte address of register ``name`` (element ``index`` of an array)."""
    for reg in registers:
        if reg.name == name:
            if reg.count is not None and not 0 <= index < reg.count:
                raise IndexError(f"{name} has {reg.count} registers, not index {index}")
            return reg.offset + 4 * index
    raise KeyError(f"no register named {name!r}")
