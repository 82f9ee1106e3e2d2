"""Image features of mouth crops (001 section 4.1): 2-D DCT, then PCA.

The orthonormal 2-D DCT-II (``scipy.fft.dctn``, ``norm="ortho"``) keeps distances, so
pixel-space and DCT-space squared errors are equal. Only the top-left ``dct_block`` x
``dct_block`` (lowest-frequency) coefficients are kept, the usual reduction before PCA in
lip reading; the PCA (scikit-learn, full SVD: deterministic) is fitted on the training
utterances' crops and keeps the fewest components that explain ``pca_variance`` of the
kept block's variance. Decoding inverts both (the dropped DCT coefficients are zero), so
a crop comes back to within the variance that was not kept:

    sum ||x - decode(encode(x))||^2 / sum ||x - mean||^2 = 1 - total_share

on the training crops, where ``total_share = block_share * pca_share``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.fft import dctn, idctn
from sklearn.decomposition import PCA

from pipeline.runtime import atomic_path


@dataclass(frozen=True)
class ImageCoder:
    """DCT block + PCA of ``crop_px`` x ``crop_px`` crops with pixel values in [0, 1]."""

    crop_px: int
    dct_block: int
    mean: np.ndarray
    """``(S, S)`` mean of the training crops' DCT coefficients (all of them: decoding puts
    the mean crop's fine detail back, outside the block too)."""
    components: np.ndarray
    """``(k, dct_block**2)`` orthonormal principal axes, largest variance first."""
    explained_variance: np.ndarray
    """``(k,)`` variance of the training crops along each axis."""
    block_share: float
    """Share of the training crops' pixel variance (about their mean) in the DCT block."""
    pca_share: float
    """Share of the block's variance that the ``k`` components explain."""

    @property
    def n_components(self) -> int:
        """Return the number of image features ``k``."""
        return len(self.components)

    @property
    def total_share(self) -> float:
        """Return the share of the training crops' pixel variance the features keep."""
        return self.block_share * self.pca_share

    @classmethod
    def fit(cls, crops: np.ndarray, dct_block: int, pca_variance: float) -> ImageCoder:
        """Return the coder fitted to ``(n, S, S)`` uint8 training crops.

        ``dct_block`` 0 keeps every coefficient. Raises ``ValueError`` for fewer than 2 crops.
        """
        if len(crops) < 2:
            raise ValueError(f"PCA needs at least 2 training crops, got {len(crops)}")
        size = crops.shape[1]
        block = dct_block or size
        full = _dct(crops)
        kept = full[:, :block, :block].reshape(len(crops), -1)
        total_variance = full.reshape(len(crops), -1).var(axis=0).sum()
        pca = PCA(n_components=pca_variance, svd_solver="full").fit(kept)
        block_variance = kept.var(axis=0).sum()
        return cls(
            crop_px=size, dct_block=block, mean=full.mean(axis=0), components=pca.components_,
            explained_variance=pca.explained_variance_,
            block_share=float(block_variance / total_variance) if total_variance > 0 else 1.0,
            pca_share=float(pca.explained_variance_ratio_.sum()),
        )

    def encode(self, crops: np.ndarray) -> np.ndarray:
        """Return the ``(n, k)`` float32 features of ``(n, S, S)`` uint8 crops."""
        block = self.dct_block
        kept = (_dct(crops) - self.mean)[:, :block, :block].reshape(len(crops), -1)
        return (kept @ self.components.T).astype(np.float32)

    def decode(self, features: np.ndarray, clip: bool = True) -> np.ndarray:
        """Return ``(n, S, S)`` float64 crops (clipped to [0, 1]) from ``(n, k)`` features."""
        kept = np.asarray(features, np.float64) @ self.components
        full = np.repeat(self.mean[None], len(kept), axis=0)
        full[:, :self.dct_block, :self.dct_block] += kept.reshape(-1, self.dct_block,
                                                                  self.dct_block)
        crops = idctn(full, axes=(1, 2), norm="ortho")
        return np.clip(crops, 0.0, 1.0) if clip else crops

    def save(self, path: str | Path) -> None:
        """Write the coder as a small Parquet table (row 0: the mean DCT, then the axes)."""
        table = pa.table({
            "vector": pa.array([self.mean.reshape(-1).tolist(), *self.components.tolist()],
                               pa.list_(pa.float64())),
            "variance": pa.array([np.nan, *self.explained_variance.tolist()], pa.float64()),
        })
        metadata = {"crop_px": str(self.crop_px), "dct_block": str(self.dct_block),
                    "block_share": repr(self.block_share), "pca_share": repr(self.pca_share)}
        with atomic_path(path) as tmp:
            pq.write_table(table.replace_schema_metadata(metadata), tmp)

    @classmethod
    def load(cls, path: str | Path) -> ImageCoder:
        """Return the coder written by :meth:`save`."""
        table = pq.read_table(path)
        meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
        vectors = table.column("vector").to_pylist()
        size = int(meta["crop_px"])
        return cls(
            crop_px=size, dct_block=int(meta["dct_block"]),
            mean=np.array(vectors[0], np.float64).reshape(size, size),
            components=np.array(vectors[1:], np.float64).reshape(-1, int(meta["dct_block"]) ** 2),
            explained_variance=table.column("variance").to_numpy()[1:].astype(np.float64),
            block_share=float(meta["block_share"]), pca_share=float(meta["pca_share"]),
        )


def _dct(crops: np.ndarray) -> np.ndarray:
    """Return the orthonormal 2-D DCT-II of ``(n, S, S)`` uint8 crops scaled to [0, 1]."""
    return dctn(np.asarray(crops, np.float64) / 255.0, axes=(1, 2), norm="ortho")
