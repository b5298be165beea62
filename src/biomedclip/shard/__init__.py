"""The validated manifest + image store → WebDataset tar shards per split (open_clip's layout)."""

from biomedclip.shard.writer import ShardInputError, write_shards

__all__ = ["ShardInputError", "write_shards"]
