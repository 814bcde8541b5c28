"""Encodings in bulk: the Parquet format (`parquet`), `dedupd import` (`importer`), the Ray backfill (`backfill`)."""
