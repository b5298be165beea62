"""The orchestration layer: one Prefect flow per pipeline stage, and the scheduled retrain.

A flow is wiring. It calls the stage's library function in a task (with retries where a failure
can be transient), publishes what the library renders as a Prefect artifact, and records its flow
run beside the stage's outputs (`biomedclip.provenance`), which the lineage reads. `flows/*.py`
are the entry points `dvc.yaml` and `prefect.yaml` call. The stage libraries
(`biomedclip.ingest`, `.validate`, `.shard`, `.train`, `.evaluate`, `.register`, `.retrain`)
never import Prefect: everything here also runs without it, from `biomedclip <command>`.
"""
