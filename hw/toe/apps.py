"""Applications on the TCP engine's interface: echo server, bulk sender, sink.

Each application takes the engine's notifications for its own sessions through
:meth:`handle` and does its work in :meth:`poll`; :class:`AppHost` routes the notifications of
one engine to several applications. They run on the golden model and on the RTL engine alike.
"""

from __future__ import annotations

from nicsim.hw.ref.tcp import Notice, Notification, TcpError

__all__ = ["AppHost", "EchoApp", "SendApp", "SinkApp"]


class _App:
    def __init__(self, engine):
        self.engine = engine
        self.sessions: set[int] = set()
        self.resets: list[tuple[int, str]] = []

    def owns(self, note: Notification) -> bool:
        return note.session in self.sessions

    def poll(self) -> None:
        """Do the work that waits on buffer space."""


class EchoApp(_App):
    """Listen on ``port`` and send every received byte back; close after the peer closes.

    Members
    -------
    echoed : int
        Bytes sent back so far.
    finished : int
        Connections the peer closed whose data has all been echoed and closed.
    """

    def __init__(self, engine, port: int):
        super().__init__(engine)
        self.port = port
        self.echoed = 0
        self.finished = 0
        self._pending: dict[int, bytearray] = {}
        self._peer_closed: set[int] = set()
        engine.listen(port)

    def owns(self, note: Notification) -> bool:
        if note.kind == Notice.CONNECTED and note.session not in self.sessions:
            try:
                if self.engine.session_info(note.session)["local_port"] == self.port:
                    self.sessions.add(note.session)
            except TcpError:
                return False
        return note.session in self.sessions

    def handle(self, note: Notification) -> None:
        sid = note.session
        if note.kind == Notice.CONNECTED:
            self._pending[sid] = bytearray()
        elif note.kind == Notice.CLOSED and note.info == "peer":
            self._peer_closed.add(sid)
        elif note.kind in (Notice.RESET, Notice.CLOSED):
            if note.kind == Notice.RESET:
                self.resets.append((sid, note.info))
            self.sessions.discard(sid)
            self._pending.pop(sid, None)
            self._peer_closed.discard(sid)

    def poll(self) -> None:
        for sid in list(self._pending):
            buf = self._pending[sid]
            buf += self.engine.recv(sid)
            if buf:
                taken = self.engine.send(sid, bytes(buf))
                del buf[:taken]
                self.echoed += taken
            if not buf and sid in self._peer_closed and self.engine.at_eof(sid):
                self.engine.close(sid)
                self.finished += 1
                del self._pending[sid]


class SendApp(_App):
    """Open one connection per payload to ``ip:port``, send the payload, then close.

    Members
    -------
    opened : list of int
        Session numbers, in payload order.
    done : set of int
        Sessions whose payload has been handed to the engine and closed.
    released : set of int
        Sessions the engine released after the close (FIN acknowledged and peer's FIN seen).
    """

    def __init__(self, engine, ip: str, port: int, payloads: list[bytes], close: bool = True):
        super().__init__(engine)
        self.close_after = close
        self.opened = [engine.open(ip, port) for _ in payloads]
        self.sessions = set(self.opened)
        self._left = {sid: memoryview(p) for sid, p in zip(self.opened, payloads, strict=True)}
        self._connected: set[int] = set()
        self.done: set[int] = set()
        self.released: set[int] = set()
        self.received: dict[int, bytearray] = {sid: bytearray() for sid in self.opened}

    def handle(self, note: Notification) -> None:
        sid = note.session
        if note.kind == Notice.CONNECTED:
            self._connected.add(sid)
        elif note.kind == Notice.RESET:
            self.resets.append((sid, note.info))
            self.released.add(sid)
        elif note.kind == Notice.CLOSED and note.info == "done":
            self.released.add(sid)

    def poll(self) -> None:
        for sid in list(self._left):
            if sid not in self._connected or sid in self.released:
                continue
            # recv, not readable: on the gateware a query is a command of its own, while recv
            # asks only after a data notification
            try:
                self.received[sid] += self.engine.recv(sid)
            except TcpError:
                # released without a notification (the model releases a session in TIME-WAIT
                # on a RST silently)
                self.released.add(sid)
                continue
            left = self._left[sid]
            if left:
                taken = self.engine.send(sid, bytes(left[:1 << 16]))
                self._left[sid] = left[taken:]
            if not self._left[sid] and sid not in self.done:
                self.done.add(sid)
                if self.close_after:
                    self.engine.close(sid)


class SinkApp(_App):
    """Listen on ``port``, keep every received byte per session, close when the peer closes.

    Members
    -------
    data : dict
        Received bytes by session number.
    closed : set of int
        Sessions the peer closed and this side closed in turn.
    """

    def __init__(self, engine, port: int, read: bool = True):
        super().__init__(engine)
        self.port = port
        self.read = read
        self.data: dict[int, bytearray] = {}
        self.closed: set[int] = set()
        self._gone: set[int] = set()  # sessions reset or released
        self._peer_fin: set[int] = set()  # sessions whose peer closed
        engine.listen(port)

    owns = EchoApp.owns

    def handle(self, note: Notification) -> None:
        sid = note.session
        if note.kind == Notice.CONNECTED:
            self.data.setdefault(sid, bytearray())
            self._gone.discard(sid)
            self._peer_fin.discard(sid)
        elif note.kind == Notice.RESET:
            self.resets.append((sid, note.info))
            self._gone.add(sid)
        elif note.kind == Notice.CLOSED:
            (self._peer_fin if note.info == "peer" else self._gone).add(sid)

    def poll(self) -> None:
        if not self.read:
            return
        # the notifications say which sessions are gone and which saw the peer's FIN, so the
        # engine is asked (at_eof: a command on the gateware) only after a FIN
        for sid in list(self.sessions):
            if sid in self._gone:
                continue
            try:
                self.data.setdefault(sid, bytearray()).extend(self.engine.recv(sid))
            except TcpError:  # released without a notification (a RST in TIME-WAIT)
                self._gone.add(sid)
                continue
            if sid not in self.closed and sid in self._peer_fin and self.engine.at_eof(sid):
                self.engine.close(sid)
                self.closed.add(sid)


class AppHost:
    """Route one engine's notifications to its applications and poll them.

    Parameters
    ----------
    engine
        The engine (golden model or RTL driver).
    apps : list
        Applications; a notification goes to the first that owns its session.
    """

    def __init__(self, engine, apps: list):
        self.engine = engine
        self.apps = list(apps)
        self.unclaimed: list[Notification] = []

    def step(self) -> None:
        """Deliver the pending notifications and poll every application."""
        for note in self.engine.notifications():
            for app in self.apps:
                if app.owns(note):
                    app.handle(note)
                    break
            else:
                self.unclaimed.append(note)
        for app in self.apps:
            app.poll()
