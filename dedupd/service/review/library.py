"""What the review page shows: the daemon's groups, one card each, sorted by space to free, served by page.

Asks the daemon (through an `Ask`, with no more rights than `dedupctl`) for the groups of a tier ranked by
space to free, with the keep policy's plan per group and each member's record (size, pixels, digest,
capture metadata): one `duplicates`/`similar` request with `order` "free" and `records`, once per refresh,
in a background thread. Pages are slices of the last list, so a library with 10,000 groups sends the
browser one page at a time and a page never waits for the whole list: before the first list exists a page
is one small request of its own (`offset`, `limit`), and a page answered from a list that is being
refreshed says so (the page asks again). A group's id is a digest of its member paths: an action names the
group the user saw, and is refused if the group changed meanwhile.
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
#: The daemon's order for the page's: most space to free first.
_RANKED = {"order": "free", "records": True}
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
        "companions": [os.path.basename(c["path"]) for c in record.get("companions") or []],  # go along with it
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
        self._paged: dict[str, dict[str, Card]] = {}  # tier -> cards of pages served before its first list
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

    def page(self, tier: str, number: int, per_page: int, refresh: bool = False) -> dict[str, Any]:
        """A page of the last list (with `refresh`, a new list is loaded in the background, and the page says
        `refreshing`); before the first list, the page straight from the daemon, and the list loads after."""
        start = max(0, number) * per_page
        self._check(tier)
        with self._lock:
            listed, loading = tier in self._cards, self._wanted.get(tier, 0) != self._loaded.get(tier, 0)
        if listed and refresh:
            self.refresh(tier)
        if not listed:  # no list yet (a server that just started): this page alone, then the whole list
            answer = self._ask_groups(tier, {"offset": start, "limit": per_page})
            shown = self._cards_of(answer)
            with self._lock:
                self._paged.setdefault(tier, {}).update((card.id, card) for card in shown)
            if not loading:
                self.refresh(tier)
            return {"tier": tier, "page": number, "per_page": per_page, "total": answer.get("total", len(shown)),
                    "free_bytes": answer.get("free_bytes", 0), "refreshing": True,
                    "groups": [card.document() for card in shown]}
        cards, refreshing = self.cards(tier)
        return {"tier": tier, "page": number, "per_page": per_page, "total": len(cards),
                "free_bytes": sum(card.free_bytes for card in cards), "refreshing": refreshing,
                "groups": [card.document() for card in cards[start:start + per_page]]}

    def find(self, tier: str, card_id: str) -> Card:
        self._check(tier)
        with self._lock:
            early = None if tier in self._cards else self._paged.get(tier, {}).get(card_id)
        if early is not None:
            return early
        for card in self.cards(tier)[0]:
            if card.id == card_id:
                return card
        raise ProtocolError(ErrorCode.NOT_FOUND, "that group changed or is gone; the page shows it anew")

    def knows(self, path: str) -> bool:
        """Is `path` a member of a group the page showed (only those are served as images)."""
        with self._lock:
            return path in self.records

    def _load(self, tier: str) -> list[Card]:
        cards = self._cards_of(self._ask_groups(tier, {}))
        with self._lock:
            self._paged.pop(tier, None)
        return cards

    def _ask_groups(self, tier: str, page: Mapping[str, Any]) -> dict[str, Any]:
        """The daemon's groups of `tier` in the page's order, with plans and records (a page of them)."""
        try:
            return self._ask(TIERS[tier], {**_RANKED, **page})
        except ProtocolError as exc:
            if exc.code == ErrorCode.UNKNOWN_COMMAND:
                return {"groups": [], "plans": [], "records": {}, "total": 0, "free_bytes": 0}  # no such tier
            raise

    def _cards_of(self, answer: Mapping[str, Any]) -> list[Card]:
        """Cards of a ranked answer, in its order (the keeper, or else the first path, first in each)."""
        records: dict[str, Any] = answer.get("records") or {}
        with self._lock:
            self.records.update(records)
        cards = []
        for group, plan in zip(answer["groups"], answer.get("plans") or [{}] * len(answer["groups"]), strict=True):
            members = [m["path"] for m in group]
            going = set(plan.get("remove") or ())
            keeper = next((p for p in members if p not in going), None) if going else None
            digests = {(records.get(p) or {}).get("digest") for p in members}
            shown = tuple(_member(m, records.get(m["path"]), m["path"] == keeper, plan.get("why")) for m in group)
            shown = tuple(sorted(shown, key=lambda m: (not m["keep"], m["path"])))
            cards.append(Card(group_id(members), shown, int(plan.get("free_bytes") or 0),
                              len(digests) == 1 and None not in digests))
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
