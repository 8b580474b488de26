"""One place that picks the FAISS index for a catalogue: exact search for the book's catalogues,
an approximate FAISS index for paper-scale ones (the paper's corpus has ~300k movies).

`build_index(vectors)` returns an exact `faiss.IndexFlatIP` up to `FLAT_MAX_ITEMS` items (the
book's catalogues, 1k-70k items, keep exact search and the same numbers) and an approximate
index above it. Every parameter below was chosen by `scripts/bench_ann.py` (synthetic clustered
catalogues of 300k and 3M items at dim 65 = LRURec's 64 + bias, and dim 384 = MiniLM); its
comments quote the measurement. FAISS does all the work: this module only chooses and configures.
"""

from __future__ import annotations

import numpy as np

#: Largest catalogue searched exactly by `kind="auto"`, so the book's catalogues (1k-70k items)
#: keep exact search and the same numbers as before. At 100k items exact search took 9 ms
#: (dim 384) and 16 ms (dim 65: noise of the shared machine, 300k x 65 took 3 ms in a quieter
#: run) per single query, 0.4-0.6 ms per query in a batch of 1,000; 850 ms at 3M x 384.
FLAT_MAX_ITEMS = 100_000
#: The approximate index `kind="auto"` builds above `FLAT_MAX_ITEMS`. IVF beat HNSW on every
#: synthetic catalogue (scripts/bench_ann.py, 2 shared cores, single-query median): recall@100
#: 0.988 at 0.28 ms (300k x 65), 0.965 at 1.0 ms (3M x 65), 0.990 at 3.9 ms (3M x 384), where
#: HNSW (M=32, efSearch=512) reached 0.957 at 1.1 ms and 0.906 at 1.4 ms at 3M; IVF also needs
#: less memory (the vectors plus the centroids, no graph: 0.77 vs 1.52 GB at 3M x 65), builds
#: faster (210 vs 365 s at 3M x 65, 628 vs 877 s at 3M x 384) and gives the same index on every
#: rebuild (a seeded k-means sample; HNSW's threaded insertion is not guaranteed reproducible).
AUTO_APPROXIMATE = "ivf"
#: IVF: lists = `IVF_LISTS_PER_SQRT` x sqrt(n) rounded to a power of two (2048 at 300k, 8192 at
#: 3M), at most `IVF_MAX_LISTS` and at least 39 training vectors per list (FAISS's minimum);
#: k-means trained on a seeded sample of `IVF_TRAIN_PER_LIST` vectors per list.
IVF_LISTS_PER_SQRT = 4
IVF_MAX_LISTS = 8192
IVF_TRAIN_PER_LIST = 64
#: IVF lists probed: `IVF_PROBES_PER_SQRT_LIST` x sqrt(lists) rounded to a power of two (64 of
#: 2048 at 300k, 128 of 8192 at 3M). Measured at 300k: 32 probes reach recall@100 0.950 at dim 65
#: (too close to 0.95), 64 reach 0.988; at 3M x 65, 64 probes 0.912, 128 0.965, 256 0.993; at
#: 3M x 384, 64 probes 0.969 (2.5 ms), 128 0.990 (3.9 ms), 256 1.000 (7.1 ms, over 5 ms).
IVF_PROBES_PER_SQRT_LIST = 1.5
#: HNSW (forced with kind="hnsw"): graph degree and beam widths. M=16 stays below recall@100
#: 0.88 at 300k whatever efSearch; with M=32, efSearch=256 reaches 0.986 (dim 65) / 0.955
#: (dim 384) at 300k but 0.941 / 0.868 at 3M, where efSearch=512 reaches 0.957 / 0.906.
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 40
HNSW_EF_SEARCH = 512

KINDS = ("auto", "flat", "hnsw", "ivf")
METRICS = ("ip", "l2")


def choose_kind(n_items: int) -> str:
    """The kind `build_index(kind="auto")` builds for `n_items` vectors."""
    return "flat" if n_items <= FLAT_MAX_ITEMS else AUTO_APPROXIMATE


def ivf_lists(n_items: int) -> int:
    """Number of IVF lists for `n_items` vectors (see the IVF constants)."""
    target = max(1.0, IVF_LISTS_PER_SQRT * np.sqrt(n_items))
    return int(min(IVF_MAX_LISTS, 2 ** round(np.log2(target)), max(1, n_items // 39)))


def ivf_probes(lists: int) -> int:
    """Number of IVF lists searched per query when there are `lists` (see the IVF constants)."""
    target = max(1.0, IVF_PROBES_PER_SQRT_LIST * np.sqrt(lists))
    return int(min(lists, 2 ** round(np.log2(target))))


def build_index(vectors: np.ndarray, metric: str = "ip", kind: str = "auto",
                seed: int = 0) -> object:
    """A FAISS index holding `vectors` (row n is id n), searched by inner product (`"ip"`) or
    squared L2 distance (`"l2"`).

    `kind="auto"` builds `choose_kind(len(vectors))`; `"flat"` (exact), `"hnsw"` or `"ivf"`
    force one. IVF's k-means runs on a sample drawn with `seed`, so a rebuild gives the same
    index; search parameters (efSearch, nprobe) are set on the returned index.
    """
    import faiss

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    data = np.ascontiguousarray(vectors, dtype="float32")
    if data.ndim != 2 or data.shape[0] == 0:
        raise ValueError(f"vectors must be a non-empty (n, dim) array, got shape {data.shape}")
    n, dim = data.shape
    chosen = choose_kind(n) if kind == "auto" else kind
    faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
    if chosen == "flat":
        index = faiss.IndexFlatIP(dim) if metric == "ip" else faiss.IndexFlatL2(dim)
    elif chosen == "hnsw":
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss_metric)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
    else:
        lists = ivf_lists(n)
        index = faiss.index_factory(dim, f"IVF{lists},Flat", faiss_metric)
        index.cp.seed = seed
        sample = min(n, lists * IVF_TRAIN_PER_LIST)
        rows = np.sort(np.random.default_rng(seed).choice(n, size=sample, replace=False))
        index.train(data[rows])
        index.nprobe = ivf_probes(lists)
    index.add(data)
    return index
