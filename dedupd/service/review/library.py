"""What the review page shows: the daemon's groups, one card each, sorted by space to free, served by page.

Asks the daemon (through an `Ask`, with no more rights than `dedupctl`) for the groups of a tier, the keep
policy's proposals (`to-remove`) and each member's record (size, pixels, digest, capture metadata), once per
refresh, in a background thread; pages are slices of the last sorted list, so a library with 10,000 groups
sends the browser one page at a time and a page never waits for the daemon once a list exists (a page
answered from a list that is being refreshed says so, and the page asks again). A group's id is a digest
of its member paths: an action names the group the user saw, and is refused if the group changed meanwhile.
"""

import hashlib
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dedupd.errors import DedupdError
from dedupd.protocol import ErrorCode, ProtocolError

type Ask = Callable[[str, Mapping[str, Any]], dict[str, Any]]

#: The tiers the page has views for, and the daemon verb that lists each.
TIERS = {"duplicates": "duplicates", "similar": "similar"}
_RECORDS_PER_REQUEST = 2000
#: Groups are fetched again after this long even without an action (the library changes under the page).
REFRESH_S = 10.0


@dataclass(frozen=True, slots=True)
class Card:
    """One group as the page shows it."""

    id: str
    members: tuple[dict[str, Any], ...]
    free_bytes: int
    identical: bool  # every member has the same content digest: links are possible

    def document(self) -> dict[str, Any]:
        return {"id": self.id, "members": list(self.members), "free_bytes": self.free_bytes,
                "identical": self.identical}


def group_id(paths: Sequence[str]) -> str:
    return hashlib.sha1("\0".join(sorted(paths)).encode("utf-8", "surrogateescape")).hexdigest()[:16]


def _camera(capture: Mapping[str, Any] | None) -> str | None:
    if not capture:
        return None
    make, model = capture.get("make") or "", capture.get("model") or ""
    name = model if make and model.lower().startswith(make.lower()) else f"{make} {model}".strip()
    return name or None


def _taken(capture: Mapping[str, Any] | None) -> str | None:
    if not capture or not capture.get("time"):
        return None
    text = str(capture["time"])
    date, _, clock = text.partition(" ")
    shown = date.replace(":", "-") + (f" {clock}" if clock else "")
    return shown + (f".{capture['subsec']}" if capture.get("subsec") else "")


def _member(match: Mapping[str, Any], record: Mapping[str, Any] | None, keep: bool, why: str | None) -> dict[str, Any]:
    path = match["path"]
    record = record or {}
    capture = record.get("capture")
    return {
        "path": path, "name": os.path.basename(path), "folder": os.path.dirname(path),
        "size": record.get("size"), "width": record.get("width"), "height": record.get("height"),
        "format": (capture or {}).get("format") or os.path.splitext(path)[1].lstrip(".").upper() or None,
        "taken": _taken(capture), "camera": _camera(capture),
        "method": match.get("method"), "distance": match.get("distance"), "similarity": match.get("similarity"),
        "matched": match.get("matched"), "keep": keep, "why": why if keep else None,
        "protected": bool(record.get("protected")),
        "digest": record.get("digest"), "mtime_ns": record.get("mtime_ns"),
    }


class Library:
    """The groups of each tier, cached between refreshes; thread-safe (the HTTP server is threaded)."""

    def __init__(self, ask: Ask) -> None:
        self._ask = ask
        self._lock = threading.Condition()
        self._cards: dict[str, tuple[float, list[Card]]] = {}  # tier -> (when loaded, sorted cards)
        self._wanted: dict[str, int] = {}  # tier -> refreshes asked for; `_loaded` follows it in the background
        self._loaded: dict[str, int] = {}
        self._errors: dict[str, str] = {}
        self.records: dict[str, Any] = {}

    def refresh(self, tier: str) -> None:
        """Load the tier's groups again in the background; until then pages come from the last list (marked
        `refreshing`), so a request never waits for the daemon once a list exists."""
        self._check(tier)
        with self._lock:
            self._wanted[tier] = self._wanted.get(tier, 0) + 1
            if self._wanted[tier] - self._loaded.get(tier, 0) > 1:
                return  # a refresh is running; it goes round once more for this request
        threading.Thread(target=self._refresher, args=(tier,), name=f"dedupd-review-{tier}", daemon=True).start()

    def _refresher(self, tier: str) -> None:
        while True:
            with self._lock:
                wanted = self._wanted[tier]
            try:
                cards, error = self._load(tier), None
            except (DedupdError, OSError) as exc:
                cards, error = None, str(exc)
            with self._lock:
                if cards is not None:
                    self._cards[tier] = (time.monotonic(), cards)
                    self._errors.pop(tier, None)
                elif error is not None:
                    self._errors[tier] = error
                self._loaded[tier] = wanted
                self._lock.notify_all()
                if self._wanted[tier] == wanted:
                    return

    def drop(self, tier: str, card_id: str) -> None:
        """An action resolved this group: leave it out of the list now; the background refresh confirms."""
        with self._lock:
            if tier in self._cards:
                when, cards = self._cards[tier]
                self._cards[tier] = (when, [card for card in cards if card.id != card_id])
        self.refresh(tier)

    @staticmethod
    def _check(tier: str) -> None:
        if tier not in TIERS:
            raise ProtocolError(ErrorCode.BAD_ARGS, f"unknown tier {tier!r}")

    def cards(self, tier: str) -> tuple[list[Card], bool]:
        """(the sorted cards, whether a refresh is under way); waits only when no list was loaded yet."""
        self._check(tier)
        with self._lock:
            cached = self._cards.get(tier)
            stale = cached is None or time.monotonic() - cached[0] >= REFRESH_S
        if stale and self._wanted.get(tier, 0) == self._loaded.get(tier, 0):
            self.refresh(tier)
        with self._lock:
            while tier not in self._cards:
                if tier in self._errors and self._wanted[tier] == self._loaded.get(tier, 0):
                    raise DedupdError(self._errors[tier])
                self._lock.wait(1.0)
            return self._cards[tier][1], self._wanted[tier] != self._loaded.get(tier, 0)

    def page(self, tier: str, number: int, per_page: int) -> dict[str, Any]:
        cards, refreshing = self.cards(tier)
        start = max(0, number) * per_page
        return {"tier": tier, "page": number, "per_page": per_page, "total": len(cards),
                "free_bytes": sum(card.free_bytes for card in cards), "refreshing": refreshing,
                "groups": [card.document() for card in cards[start:start + per_page]]}

    def find(self, tier: str, card_id: str) -> Card:
        for card in self.cards(tier)[0]:
            if card.id == card_id:
                return card
        raise ProtocolError(ErrorCode.NOT_FOUND, "that group changed or is gone; the page shows it anew")

    def knows(self, path: str) -> bool:
        """Is `path` a member of a group the page showed (only those are served as images)."""
        with self._lock:
            return path in self.records

    def _load(self, tier: str) -> list[Card]:
        try:
            groups = self._ask(TIERS[tier], {})["groups"]
        except ProtocolError as exc:
            if exc.code == ErrorCode.UNKNOWN_COMMAND:
                return []  # a daemon without that tier
            raise
        removal = self._ask("to-remove", {}) if tier == "duplicates" else {"files": []}
        proposed = set(removal["files"])
        why = {kept: plan.get("why") for plan in removal.get("groups", []) for kept in plan.get("keep", [])}
        paths = sorted({m["path"] for group in groups for m in group})
        records: dict[str, Any] = {}
        for start in range(0, len(paths), _RECORDS_PER_REQUEST):
            records.update(self._ask("records", {"paths": paths[start:start + _RECORDS_PER_REQUEST]})["records"])
        with self._lock:
            self.records.update(records)
        cards = []
        for group in groups:
            members = [m["path"] for m in group]
            going = [p for p in members if p in proposed]
            keeper = next((p for p in members if p not in proposed), None) if going else None
            sizes = [(records.get(p) or {}).get("size") or 0 for p in members]
            free = sum(size for p, size in zip(members, sizes, strict=True) if p in going) if going else \
                sum(sizes) - max(sizes, default=0)
            digests = {(records.get(p) or {}).get("digest") for p in members}
            shown = tuple(_member(m, records.get(m["path"]), m["path"] == keeper, why.get(m["path"])) for m in group)
            shown = tuple(sorted(shown, key=lambda m: (not m["keep"], m["path"])))
            cards.append(Card(group_id(members), shown, free, len(digests) == 1 and None not in digests))
        cards.sort(key=lambda card: (-card.free_bytes, card.members[0]["path"]))
        return cards


def plan_for(card: Card, keep: str | None) -> tuple[list[str], set[str]]:
    """(members, the files that go) for keeping the proposed file (`keep` None) or the chosen one."""
    members = [m["path"] for m in card.members]
    if keep is None:
        keepers = [m["path"] for m in card.members if m["keep"]]
        if not keepers:
            raise DedupdError("this group has no proposed file to keep; choose one")
        keep = keepers[0]
    if keep not in members:
        raise DedupdError(f"{keep} is not in this group")
    return members, set(members) - {keep}
