"""MSI-X interrupts of one PCI function, with per-vector interrupt moderation.

The table follows the PCIe specification: each vector has a message address and data, a mask
bit and a pending bit, and the function has a function-wide mask. A message for a masked
vector sets its pending bit instead of being sent; clearing the mask with the pending bit set
sends the message then and clears the bit. A sent message is a 4-byte posted memory write
upstream (``link.msi``), delivered to the host at the time the link returns.

Above the table sits the NIC's interrupt moderation, as set by ``ethtool -C rx-frames N
rx-usecs U`` (the ITR/EITR of ixgbe, the CQ moderation of mlx5): the device reports completed
packets with :meth:`MsixTable.event`, and a vector interrupts when ``frames`` packets have
accumulated since its last interrupt, or ``usecs`` after the first of them, whichever comes
first. The driver may also disable a vector's interrupts while it polls (NAPI) and re-enable
them afterwards; packets completed meanwhile are remembered and re-enabling fires at once.

Events cost O(1) and no SimPy event; a moderation window costs at most one timer, and each
interrupt one timeout for its delivery.
"""

# Ref: PCI Express Base Specification 5.0, §6.1.4 (MSI-X: table, mask and pending bits);
# Linux Documentation/networking/ethtool-netlink.rst (coalescing parameters).

from __future__ import annotations

from dataclasses import dataclass

from .units import US

__all__ = ["MsixTable", "Moderation", "MSI_ADDRESS_BASE", "MSIX_MAX_VECTORS"]

MSIX_MAX_VECTORS = 2048  # PCIe: the MSI-X Table Size field holds N-1 in 11 bits
MSI_ADDRESS_BASE = 0xFEE0_0000  # x86 interrupt message address window (LAPIC)


@dataclass(frozen=True)
class Moderation:
    """Interrupt moderation of one vector, as ``ethtool -C``'s rx-frames and rx-usecs.

    Parameters
    ----------
    frames : int
        Interrupt once this many events accumulated since the last interrupt; 0 means no limit
        by count.
    usecs : float
        Interrupt this many microseconds after the first event not yet signalled; 0 means no
        timer. ``frames=1`` (or ``0`` and ``0``) interrupts for every event. With ``frames > 1``
        and ``usecs=0`` the last events of a burst wait for more to come, as on real NICs.
    """

    frames: int = 1
    usecs: float = 0

    def __post_init__(self):
        if not isinstance(self.frames, int) or self.frames < 0:
            raise ValueError(
                f"Interrupt moderation frames must be a non-negative integer, not "
                f"{self.frames!r}")
        if not self.usecs >= 0:
            raise ValueError(
                f"Interrupt moderation usecs must be non-negative, not {self.usecs!r}")

    @property
    def usecs_ps(self):
        """The timer in picoseconds."""
        return round(self.usecs * US)

    @property
    def count_limit(self):
        """The frame count that fires (1 when moderation is off; 0 for no count limit)."""
        return 1 if self.frames == 0 and self.usecs == 0 else self.frames


NO_MODERATION = Moderation()


class _Vector:
    __slots__ = ("address", "data", "masked", "pending", "frames", "usecs_ps", "disabled",
                 "outstanding", "deadline", "timer_at")

    def __init__(self, address, data, masked, moderation):
        self.address = address
        self.data = data
        self.masked = masked
        self.pending = False
        self.frames = moderation.count_limit
        self.usecs_ps = moderation.usecs_ps
        self.disabled = False
        self.outstanding = 0  # events since the last interrupt
        self.deadline = None  # when the open moderation window's timer expires
        self.timer_at = None  # when the one live timer wakes


class MsixTable:
    """The MSI-X table of one PCI function.

    Parameters
    ----------
    env : simpy.Environment
        The simulation.
    link : object
        The PCIe link: ``msi(addr, ready_ps=None) -> int``, the delivery time (ps) of a 4-byte
        posted write.
    vectors : int
        Number of vectors, 1 to 2048.
    deliver : callable
        ``deliver(vector, t_ps)``, called at the delivery time of each interrupt.
    moderation : Moderation
        Initial moderation of every vector (default: an interrupt per event).
    masked : bool
        Initial vector mask bits. The PCIe reset state is masked (``True``); the default
        stands for a driver that has programmed and unmasked every vector.

    Members
    -------
    fired : list of int
        Messages sent, per vector.
    masked_pending : list of int
        Messages held back by a vector or function mask, per vector.
    coalesced : list of int
        Events that did not cause their own interrupt, per vector.
    events : list of int
        Events reported with :meth:`event`, per vector.
    function_masked : bool
        The function-wide mask.
    """

    def __init__(self, env, link, vectors, deliver, moderation=NO_MODERATION, masked=False):
        if not isinstance(vectors, int) or not 1 <= vectors <= MSIX_MAX_VECTORS:
            raise ValueError(
                f"MSI-X vector count must be between 1 and {MSIX_MAX_VECTORS}, not {vectors!r}")
        self.env = env
        self.link = link
        self.vectors = vectors
        self.deliver = deliver
        self.function_masked = False
        self._vec = [_Vector(MSI_ADDRESS_BASE, v, masked, moderation) for v in range(vectors)]
        self.fired = [0] * vectors
        self.masked_pending = [0] * vectors
        self.coalesced = [0] * vectors
        self.events = [0] * vectors

    def _entry(self, vector):
        try:
            if 0 <= vector < self.vectors:
                return self._vec[vector]
        except TypeError:
            pass
        raise ValueError(
            f"MSI-X vector {vector!r} is out of range: this function has {self.vectors} "
            f"vectors, 0 to {self.vectors - 1}")

    # --- the table, as the host programs it --------------------------------------------

    def program(self, vector, address, data):
        """Set the message address and data of ``vector`` (the driver's table write)."""
        entry = self._entry(vector)
        entry.address = address
        entry.data = data

    def message(self, vector):
        """Return the ``(address, data)`` of ``vector``."""
        entry = self._entry(vector)
        return entry.address, entry.data

    def mask(self, vector):
        """Set the mask bit of ``vector``."""
        self._entry(vector).masked = True

    def unmask(self, vector, ready_ps=None):
        """Clear the mask bit of ``vector``; send its pending message, if any.

        ``ready_ps`` is when the device sees the table write (default: now). Return the
        delivery time of the message sent, or ``None``.
        """
        entry = self._entry(vector)
        entry.masked = False
        if entry.pending and not self.function_masked:
            return self._send(vector, entry, ready_ps)
        return None

    def is_masked(self, vector):
        """Return the mask bit of ``vector``."""
        return self._entry(vector).masked

    def is_pending(self, vector):
        """Return the pending bit of ``vector`` (the Pending Bit Array)."""
        return self._entry(vector).pending

    def mask_function(self):
        """Set the function mask: every vector behaves as masked."""
        self.function_masked = True

    def unmask_function(self, ready_ps=None):
        """Clear the function mask; send the pending messages of unmasked vectors.

        Return the delivery times of the messages sent, in vector order.
        """
        self.function_masked = False
        return [self._send(v, entry, ready_ps) for v, entry in enumerate(self._vec)
                if entry.pending and not entry.masked]

    # --- messages ----------------------------------------------------------------------

    def fire(self, vector, ready_ps=None):
        """Signal ``vector`` now, bypassing moderation.

        ``ready_ps`` is when the device issues the message (default: now). Return the delivery
        time, or ``None`` when a mask held the message back as pending.
        """
        entry = self._entry(vector)
        if entry.masked or self.function_masked:
            entry.pending = True
            self.masked_pending[vector] += 1
            return None
        return self._send(vector, entry, ready_ps)

    def _send(self, vector, entry, ready_ps):
        entry.pending = False
        t_ps = self.link.msi(entry.address, ready_ps)
        self.fired[vector] += 1
        env = self.env
        delivery = env.timeout(max(t_ps - env.now, 0), (vector, t_ps))
        delivery.callbacks.append(self._on_delivery)
        return t_ps

    def _on_delivery(self, event):
        self.deliver(*event.value)

    # --- moderation --------------------------------------------------------------------

    def set_moderation(self, vector, moderation):
        """Set the moderation of ``vector``; an open window keeps its timer."""
        entry = self._entry(vector)
        entry.frames = moderation.count_limit
        entry.usecs_ps = moderation.usecs_ps

    def moderation(self, vector):
        """Return the moderation of ``vector``."""
        entry = self._entry(vector)
        return Moderation(entry.frames, entry.usecs_ps / US)

    def event(self, vector, t_ps, count=1):
        """Report ``count`` packets completed on ``vector`` at ``t_ps``.

        Report a vector's events in time order. Return the delivery time of the interrupt this
        call caused, or ``None``.
        """
        entry = self._entry(vector)
        self.events[vector] += count
        if entry.disabled:
            entry.outstanding += count
            return None
        deadline = entry.deadline
        if deadline is not None and deadline <= t_ps:
            # The window's timer expired before this event: its interrupt went first.
            self._signal(vector, entry, deadline)
        outstanding = entry.outstanding + count
        entry.outstanding = outstanding
        frames = entry.frames
        if frames and outstanding >= frames:
            return self._signal(vector, entry, t_ps)
        if entry.deadline is None and entry.usecs_ps:
            entry.deadline = deadline = t_ps + entry.usecs_ps
            self._arm(vector, entry, deadline)
        return None

    def _signal(self, vector, entry, t_ps):
        """Interrupt for the outstanding events of ``vector`` at ``t_ps``."""
        self.coalesced[vector] += entry.outstanding - 1
        entry.outstanding = 0
        entry.deadline = None
        return self.fire(vector, t_ps)

    def _arm(self, vector, entry, deadline):
        timer_at = entry.timer_at
        if timer_at is not None and timer_at <= deadline:
            return  # the live timer moves on to the new deadline when it wakes
        now = self.env.now
        entry.timer_at = max(deadline, now)
        self.env.timeout(entry.timer_at - now, vector).callbacks.append(self._on_timer)

    def _on_timer(self, event):
        vector = event.value
        entry = self._vec[vector]
        now = self.env.now
        if entry.timer_at == now:
            entry.timer_at = None
        deadline = entry.deadline
        if deadline is None or entry.disabled:
            return
        if deadline <= now:
            self._signal(vector, entry, deadline)
        else:
            self._arm(vector, entry, deadline)

    # --- NAPI-style enable / disable -----------------------------------------------------

    def disable(self, vector):
        """Stop ``vector`` interrupting (the driver polls); later events are remembered."""
        entry = self._entry(vector)
        entry.disabled = True
        entry.deadline = None

    def enable(self, vector, ready_ps=None, discard_outstanding=False):
        """Let ``vector`` interrupt again; interrupt at once if events are outstanding.

        ``ready_ps`` is when the device sees the re-enable (default: now). With
        ``discard_outstanding`` the driver declares the outstanding events handled by its
        polling (like arming an mlx5 CQ at its consumer index), and none fires. Return the
        delivery time of the interrupt sent, or ``None``.
        """
        entry = self._entry(vector)
        entry.disabled = False
        if not entry.outstanding:
            return None
        if discard_outstanding:
            self.coalesced[vector] += entry.outstanding
            entry.outstanding = 0
            return None
        return self._signal(vector, entry, self.env.now if ready_ps is None else ready_ps)

    def is_enabled(self, vector):
        """Return whether ``vector`` may interrupt (not disabled for polling)."""
        return not self._entry(vector).disabled
