"""Write task rows as JSONL or Parquet, chosen by the file extension."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from s2d_ray.errors import S2DError


def write_rows(rows: list[dict[str, Any]], path: Path) -> None:
    """Atomically write ``rows`` to ``path`` (.jsonl or .parquet)."""
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".parquet"):
        raise S2DError(f"--out {path}: extension must be .jsonl or .parquet")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if suffix == ".jsonl":
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    else:
        pq.write_table(pa.Table.from_pylist(rows), tmp)
    os.replace(tmp, path)
