"""The validated manifest + image store → WebDataset tar shards per split (open_clip's layout)."""
