"""The quality gate between ingest and shard: Great Expectations on the pairs manifest."""

from biomedclip.validate.gate import ValidationFailed, ValidationInputError, validate_manifest

__all__ = ["ValidationFailed", "ValidationInputError", "validate_manifest"]
