"""The `demo-data` stage: the demo's zero-shot benchmark, the paper's benchmarks' stand-ins (PCam,
LC25000, RSNA) and its VQA benchmarks' (VQA-RAD, SLAKE), each in its own format.

The corpus itself is not a stage output (`data.dvc` versions it, and `biomedclip demo-data` or
`make run` writes it); the stage writes what the evaluation reads beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

from biomedclip.demo.benchmark import generate_benchmark
from biomedclip.demo.native import write_native
from biomedclip.demo.vqa import write_vqa_demo
from biomedclip.params import Params
from biomedclip.stage import StageContext


@dataclass(frozen=True)
class DemoDataReport:
    benchmark: str  # the labelled benchmark's summary
    native: str  # the stand-ins of PCam, LC25000, RSNA in their own formats
    vqa: str  # the stand-ins of VQA-RAD and SLAKE

    def markdown(self) -> str:
        return f"{self.benchmark}\n\n{self.native}\n\n{self.vqa}"


def run(params: Params, context: StageContext, *, force: bool = False) -> DemoDataReport:
    """Write the benchmarks of `demo.benchmark`; `force` replaces folders demo-data did not write."""
    spec = params.demo.benchmark
    return DemoDataReport(generate_benchmark(spec, force=force).summary(),
                          write_native(spec.native, seed=spec.seed, per_class=spec.per_class, force=force).summary(),
                          write_vqa_demo(spec.vqa, force=force).summary())
