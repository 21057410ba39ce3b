"""A local Hugging Face ``datasets`` folder (parquet or arrow files) as a streamed, sharded data set: each
file is one shard (``data.shards`` gives the order in which ranks and workers read them). Nothing is
downloaded and nothing is cached: parquet files are streamed (``load_dataset("parquet", streaming=True)``),
arrow files memory-mapped (``Dataset.from_file``).

The optional ``datasets`` package (``pip install scorediff[hf]``) is imported when such a folder is opened.
Images (the ``Image`` feature, decoded to PIL) become float32 (C, H, W) in [-1, 1]; arrays and lists become
float32 tensors as stored. Labels come from ``label_column`` (a ``ClassLabel`` gives the class names; absent
column: unlabeled).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .base import DataInfo, to_unit
from .shards import StreamingData


def _datasets():
    try:
        import datasets
    except ImportError:
        raise ValueError("data 'hf' needs the optional Hugging Face datasets package: pip install 'scorediff[hf]'") from None
    return datasets


def _example(value) -> Tensor:
    if hasattr(value, "convert"):  # a PIL image
        img = value.convert("L" if value.mode in ("1", "L", "I;16", "I") else "RGB")
        a = np.asarray(img, dtype=np.uint8)
        a = a[:, :, None] if a.ndim == 2 else a
        return to_unit(torch.from_numpy(a.copy()).permute(2, 0, 1))
    return torch.as_tensor(np.asarray(value, dtype=np.float32))


class HFShards(StreamingData):
    """The ``*.parquet`` / ``*.arrow`` files under ``path`` (sorted), one shard each."""

    def __init__(self, path: str, image_column: str = "image", label_column: str | None = "label"):
        folder = Path(path)
        if not folder.is_dir():
            raise ValueError(f"hf: folder {path!r} does not exist")
        self.shards = [str(p) for p in sorted(folder.rglob("*")) if p.suffix in (".parquet", ".arrow")]
        if not self.shards:
            raise ValueError(f"hf: no .parquet or .arrow files under {path!r}")
        self.path, self.image_column, self.label_column = str(folder), image_column, label_column
        ds = _datasets()
        self.counts, top = [], -1
        features = None
        for s in self.shards:
            schema, rows, labels = self._scan(s, label_column)
            features = features or ds.Features.from_arrow_schema(schema)
            for col in (image_column, label_column):
                # a missing "label" column (the default) means unlabeled data; any other missing column is an error
                if col is not None and col not in schema.names and (col == image_column or col != "label"):
                    raise ValueError(f"hf: {s} has no column {col!r}; columns: {', '.join(schema.names)}")
            self.counts.append(rows)
            if labels is not None and len(labels):
                top = max(top, int(labels.max()))
        first = self._rows(self.shards[0])[0]
        x0 = _example(first[image_column])
        names: tuple[str, ...] = ()
        feat = features.get(label_column) if label_column else None
        if feat is not None and hasattr(feat, "names"):
            names = tuple(feat.names)
        num_classes = len(names) or (top + 1 if top >= 0 else 0)
        is_image = hasattr(first[image_column], "convert")
        self.info = DataInfo(tuple(x0.shape), num_classes, "images" if is_image else "points", names)

    @staticmethod
    def _scan(shard: str, label_column: str | None):
        """(arrow schema, row count, label column as numpy or None), reading no image bytes."""
        if shard.endswith(".parquet"):
            import pyarrow.parquet as pq

            f = pq.ParquetFile(shard)
            schema = f.schema_arrow
            has = label_column in schema.names
            labels = pq.read_table(shard, columns=[label_column]).column(0).to_numpy() if has else None
            return schema, f.metadata.num_rows, labels
        table = _datasets().Dataset.from_file(shard).data.table
        has = label_column in table.column_names
        return table.schema, table.num_rows, table.column(label_column).to_numpy() if has else None

    def _rows(self, shard: str):
        ds = _datasets()
        if shard.endswith(".parquet"):
            return list(ds.load_dataset("parquet", data_files=shard, split="train", streaming=True))
        return ds.Dataset.from_file(shard)

    def read(self, i: int) -> tuple[Tensor, Tensor]:
        rows = self._rows(self.shards[i])
        xs, ys = [], []
        for r in rows:
            xs.append(_example(r[self.image_column]))
            ys.append(int(r[self.label_column]) if self.label_column in r and r[self.label_column] is not None else -1)
        return torch.stack(xs), torch.tensor(ys, dtype=torch.long)

    def __repr__(self) -> str:
        return f"HFShards({self.path!r}, shards={len(self.shards)}, n={len(self)})"
