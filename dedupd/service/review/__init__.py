"""The local review page: see each group side by side, then resolve it (trash, keep a chosen file, links,
"not duplicates") with the same journaled, undoable actions as `dedupctl resolve`.

`server` is the HTTP side (127.0.0.1, token, stdlib server, assets shipped in `assets/`), `library` what
the page shows (the daemon's groups as cards, paged and sorted by space to free), `thumbnails` the encode
pool that makes thumbnails the desktop has not. `dedupctl review` starts it on demand (`dedupd.cli.review`).
"""
