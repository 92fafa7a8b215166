"""Run suites of variants over seeds and write ``<stem>.json``, ``<stem>.md`` and ``<stem>.png``."""

import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import srsly

from .report import draw_figure, markdown_table, summarize
from .runner import ExperimentData, run_variant
from .suites import Variant


def run_experiments(
    data: ExperimentData,
    variants: Sequence[Variant],
    seeds: Sequence[int],
    work: Path,
    output_stem: Path,
    *,
    title: str = "",
    progress: Optional[Callable[[str], None]] = print,
) -> Dict[str, Any]:
    """Train and evaluate every variant with every seed, then write the three outputs.

    Finished runs in ``work`` are reused (see :func:`~.runner.run_variant`).
    RETURNS (Dict[str, Any]): What ``<stem>.json`` holds: the settings, every run and
        the summary rows.
    """
    if not seeds:
        raise ValueError("Give at least one seed.")
    runs: List[Dict[str, Any]] = []
    start = time.perf_counter()
    for variant in variants:
        for seed in seeds:
            began = time.perf_counter()
            result = run_variant(data, variant, seed, Path(work))
            runs.append(result)
            if progress is not None:
                progress(
                    f"{variant.suite} / {variant.name} / seed {seed}: test Hits@1 "
                    f"{result['test']['hits@1'] * 100:.2f}, MRR {result['test']['mrr'] * 100:.2f} "
                    f"({time.perf_counter() - began:.0f} s)"
                )
    rows = summarize(runs)
    report = {
        "config": str(data.config),
        "encoder": str(data.encoder),
        "max_steps": data.max_steps,
        "seeds": list(seeds),
        "seconds": round(time.perf_counter() - start, 1),
        "runs": runs,
        "summary": rows,
    }
    output_stem = Path(output_stem)
    output_stem.parent.mkdir(parents=True, exist_ok=True)
    srsly.write_json(output_stem.with_suffix(".json"), report)
    output_stem.with_suffix(".md").write_text(markdown_table(rows, title), encoding="utf8")
    draw_figure(rows, output_stem.with_suffix(".png"), title)
    return report
