"""Batch processing of many tilt series on a Dask cluster (``cryowedge batch``).

:func:`run_batch` runs any registered reconstruction method (or ``dewedge``: one shared
network fitted on several tomograms, then applied to all) on every tilt series of a folder,
a glob or a CSV/STAR table, one Dask task per tilt series, on a local cluster or a running
scheduler; resumable, with per-item failure isolation and a Markdown/JSON report. See
docs/batch.md.
"""

from __future__ import annotations

from cryowedge.batch.items import BatchItem, discover_items, read_table
from cryowedge.batch.run import BatchInterrupted, BatchReport, item_hash, run_batch
from cryowedge.batch.tasks import ItemResult
from cryowedge.config.batch import BatchConfig

__all__ = ["BatchConfig", "BatchInterrupted", "BatchItem", "BatchReport", "ItemResult",
           "discover_items", "item_hash", "read_table", "run_batch"]
