"""PyTorch integration of LogitCache: losses and datasets over the loader's batches."""

from .dataset import LogitCacheDataLoader, LogitCacheDataset, distributed_rank_and_world_size, order_fingerprint

__all__ = ["LogitCacheDataLoader", "LogitCacheDataset", "distributed_rank_and_world_size", "order_fingerprint"]
