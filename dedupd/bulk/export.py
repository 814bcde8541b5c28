"""`dedupctl export --format parquet`: every record of a store as dedupd's Parquet format (`dedupd.bulk.parquet`).

Run by the daemon (it holds the store); the file appears under its name only once complete. Records are read in
the store's short pages and their embeddings fetched a page at a time, so memory stays one page deep.
"""

import os

from dedupd.bulk import parquet
from dedupd.store import Store

_PAGE = 1024


def export_store(store: Store, output: str | os.PathLike[str], *, encoder: str) -> tuple[int, list[str]]:
    """Write every record of `store` to `output`: the rows written, and the paths left out (not UTF-8: the
    format keeps paths as text)."""
    left_out: list[str] = []
    with parquet.ShardWriter(output, store.dim) as writer:
        page: list[int] = []
        for rid, rec in store.iter_records():
            if parquet.is_text(rec.key.path):
                page.append(rid)
            else:
                left_out.append(rec.key.path)
            if len(page) == _PAGE:
                _write_page(store, writer, page, encoder)
        _write_page(store, writer, page, encoder)
        return writer.rows, left_out


def _write_page(store: Store, writer: parquet.ShardWriter, rids: list[int], encoder: str) -> None:
    records = store.records(rids, embedding=True)
    writer.write([parquet.Row(records[rid], encoder, store.model_id) for rid in rids if rid in records])
    rids.clear()
