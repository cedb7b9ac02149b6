"""What ingress replicas need on every request, pushed to them: camera token MACs and routes.

Why: a request must never wait on the store. The store (one actor over SQLite) was asked for a
token check whenever a replica's cache missed and for the routes every second by every replica;
at 10,000 cameras both filled it. Now the store appends each change that matters to replicas
(a camera's token MAC set, rotated or revoked; a role's serving actor; a camera's executor slot,
`stemcell.state.replicas`) to a `ControlFeed` under a
growing version, and replicas follow it by long-poll (`StateStore.control_changes`, as Serve's
controller pushes its config): a new replica loads one `ControlSnapshot`, then each change costs
O(changed entries). A replica that fell behind the feed's bounded log, or whose store restarted
(a new `epoch`), is told to reload the snapshot.

Pure Python; the store calls the feed under its own lock, replicas own a `ControlTable`.
"""
from __future__ import annotations

import hmac
import itertools
import secrets
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from stemcell.control.contracts import Routes
from stemcell.state import tokens

TOKEN = "token"  # change kind: camera id -> its token MAC (None: no token, or camera removed)
ROUTE = "route"  # change kind: role -> the actor serving it
SLOT = "slot"  # change kind: camera id -> its executor slot (decimal; None: camera removed)
FEED_LOG = 100_000  # changes a replica can catch up on before it must reload the snapshot


@dataclass(frozen=True)
class Change:
    """One entry of the feed: `kind` (`TOKEN`, `ROUTE`), its key, its new value (None: removed)."""

    kind: str
    key: str
    value: str | None


@dataclass(frozen=True)
class ControlSnapshot:
    """The whole replica table at `version` of the store's feed `epoch`."""

    epoch: str  # changes when the store process restarts (its versions start over)
    version: int
    key: bytes  # the store's token HMAC key
    token_macs: Mapping[str, str]  # camera id -> encoded token hash (HMAC, or a legacy scrypt hash)
    routes: Mapping[str, str]  # role -> actor
    slots: Mapping[str, int] = field(default_factory=dict)  # camera id -> executor slot (placed cameras)


@dataclass(frozen=True)
class ControlDelta:
    """The changes after a version; `changes` None means "too old or another epoch: load the snapshot"."""

    epoch: str
    version: int
    changes: tuple[Change, ...] | None


class ControlFeed:
    """The store's in-memory change log with a wait for news (the long-poll's other end)."""

    def __init__(self, max_log: int = FEED_LOG) -> None:
        self.epoch = secrets.token_hex(8)
        self.version = 0
        self._log: deque[tuple[int, Change]] = deque(maxlen=max_log)
        self._news = threading.Condition()
        self._staged: list[Change] = []

    def publish(self, changes: Iterable[Change]) -> int:
        """Append `changes` (one version each) and wake the waiting replicas; returns the new version."""
        with self._news:
            for change in changes:
                self.version += 1
                self._log.append((self.version, change))
            self._news.notify_all()
            return self.version

    def stage(self, changes: Iterable[Change]) -> None:
        """Hold `changes` of the store's open transaction until it commits (`commit`) or not (`discard`);
        the store's lock makes the open transaction the only one."""
        self._staged.extend(changes)

    def commit(self) -> None:
        staged, self._staged = self._staged, []
        if staged:
            self.publish(staged)

    def discard(self) -> None:
        self._staged = []

    def since(self, epoch: str, version: int) -> ControlDelta:
        """What changed after `version` (no wait)."""
        with self._news:
            oldest = self._log[0][0] if self._log else self.version + 1
            if epoch != self.epoch or version > self.version or version + 1 < oldest:
                return ControlDelta(self.epoch, self.version, None)
            newer = list(itertools.takewhile(lambda vc: vc[0] > version, reversed(self._log)))  # O(changes)
            return ControlDelta(self.epoch, self.version, tuple(c for _, c in reversed(newer)))

    def wait(self, epoch: str, version: int, timeout_s: float) -> ControlDelta:
        """`since`, waiting up to `timeout_s` for a change when there is none yet."""
        with self._news:
            if epoch == self.epoch and version == self.version:
                self._news.wait_for(lambda: self.version != version, timeout=timeout_s)
        return self.since(epoch, version)


def route_changes(before: Mapping[str, str], after: Mapping[str, str]) -> list[Change]:
    """The `ROUTE` changes from one published routes table to the next (roles gone map to None)."""
    gone = [Change(ROUTE, r, None) for r in sorted(set(before) - set(after))]
    return gone + [Change(ROUTE, r, a) for r, a in sorted(after.items()) if before.get(r) != a]


_DUMMY_MAC = tokens.HMAC_SCHEME + "$" + "0" * 64


def check_mac(key: bytes, camera_id: str, token: str, stored: str | None) -> bool | None:
    """Does `token` match the `stored` hash of `camera_id`? None for a legacy (scrypt) hash. An unknown
    camera (`stored` None) costs the same HMAC and constant-time compare (timing tells nothing)."""
    if stored is not None and tokens.is_legacy(stored):
        return None
    try:
        mine = tokens.token_mac(key, camera_id, token)
    except ValueError:  # too short or too long to be a token
        return False
    return hmac.compare_digest(mine, stored or _DUMMY_MAC) and stored is not None


@dataclass
class ControlTable:
    """A replica's copy: checks camera tokens locally and answers the routes, kept current by the feed."""

    epoch: str = ""
    version: int = -1
    key: bytes = b""
    token_macs: dict[str, str] = field(default_factory=dict)
    route_table: dict[str, str] = field(default_factory=dict)
    slot_table: dict[str, int] = field(default_factory=dict)

    @property
    def loaded(self) -> bool:
        return self.version >= 0

    def load(self, snap: ControlSnapshot) -> None:
        """Replace everything with `snap` (start-up, a feed gap, a store restart)."""
        self.epoch, self.version, self.key = snap.epoch, snap.version, snap.key
        self.token_macs, self.route_table = dict(snap.token_macs), dict(snap.routes)
        self.slot_table = dict(snap.slots)

    def apply(self, delta: ControlDelta) -> bool:
        """Apply a delta (its changes in order, up to its version: a newer delta that starts earlier
        still ends at the right values); False when it asks for a snapshot (nothing applied)."""
        if delta.changes is None or delta.epoch != self.epoch:
            return False
        if delta.version <= self.version:  # a slower, older answer (two syncs overlapped): all applied already
            return True
        tables = {TOKEN: self.token_macs, ROUTE: self.route_table, SLOT: self.slot_table}
        for change in delta.changes:
            table = tables[change.kind]
            if change.value is None:
                table.pop(change.key, None)
            else:
                table[change.key] = int(change.value) if change.kind == SLOT else change.value
        self.version = max(self.version, delta.version)
        return True

    def check_token(self, camera_id: str, token: str) -> bool | None:
        """True/False for a camera whose token is an HMAC; None for a legacy (scrypt) hash, which only
        the store can check."""
        return check_mac(self.key, camera_id, token, self.token_macs.get(camera_id))

    def routes(self) -> Routes:
        return Routes(dict(self.route_table))

    def slot(self, camera_id: str) -> int | None:
        """The camera's executor slot as the store placed it; None when not placed (use its hash)."""
        return self.slot_table.get(camera_id)
