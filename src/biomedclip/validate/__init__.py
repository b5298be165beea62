"""The quality gate between ingest and shard: Great Expectations on the pairs manifest.

`checks` (the names of the gate's checks) and `params` are light; `gate` imports Great
Expectations, so reading params never pays for it.
"""
