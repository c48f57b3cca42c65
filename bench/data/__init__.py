"""Readers of datasets in their real on-disk formats (clip_benchmark layouts, webdataset shards)."""
