"""One timed ``spacy train`` run for ``bench.train_speed``, in its own process.

Run as a script (``python bench/train_driver.py '<json settings>'``) with the tree under
test first on ``PYTHONPATH``, so the same driver times the current code and a baseline
commit. It does what ``spacy train`` does (``init_nlp``, then spaCy's training loop),
timing the two phases and every ``nlp.update`` call, and prints one JSON line: seconds
of initialization, of the loop and of the updates, examples, steps, the final dev
scores and the peak resident memory.
"""

import json
import os
import sys
import time
from pathlib import Path

from common import peak_rss_mib  # bench/common.py: this script's folder is on sys.path

# Phases of a training step: (phase, file name ending, function name) of the functions
# whose cumulative time is the phase's (they do not nest in one another).
PHASES = [
    ("examples and gold spans", "pipeline/training.py", "training_examples"),
    ("alias candidates", "spacy_m3el/kb.py", "get_alias_candidates_batch"),
    ("alias candidates", "spacy_m3el/kb.py", "fuzzy_alias_candidates_batch"),
    ("image decoding", "spacy_m3el/images.py", "load_image"),
    ("image processor (resize, crop, normalise)", "image_processing_utils.py", "__call__"),
    ("image store lookup and normalising", "ml/pixels.py", "finish_pixels"),
    ("tokenization", "tokenization_utils_base.py", "__call__"),
    ("negative mining (mention encoding and KB search)", "pipeline/training.py", "mine"),
    ("forward (encoders, units, loss)", "ml/model.py", "_forward"),
    ("backward", "thinc/shims/pytorch.py", "backprop"),
    ("optimizer and weight copies", "pipeline/linker.py", "finish_update"),
]


def profile(nlp, config, steps: int) -> dict:
    """ms per update by phase (cProfile, after one warm-up update), and one dev evaluation."""
    import cProfile
    import pstats

    from spacy.training.loop import create_train_batches
    from spacy.util import registry, resolve_dot_names

    resolved = nlp.config.interpolate()
    training = registry.resolve(resolved["training"])
    train_corpus, dev_corpus = resolve_dot_names(
        resolved, [training["train_corpus"], training["dev_corpus"]]
    )
    optimizer = training["optimizer"]
    batches = create_train_batches(nlp, train_corpus, training["batcher"], training["max_epochs"])

    def run(n: int) -> None:
        for _, (_, batch) in zip(range(n), batches):
            nlp.update(batch, sgd=optimizer, losses={})

    run(1)
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.runcall(run, steps)
    total = time.perf_counter() - start
    stats = pstats.Stats(profiler).stats
    phases = {}
    for phase, filename, function in PHASES:
        seconds = sum(
            row[3]
            for (file, _, name), row in stats.items()
            if file.endswith(filename) and name == function
        )
        phases[phase] = phases.get(phase, 0.0) + seconds
    dev = list(dev_corpus(nlp))
    start = time.perf_counter()
    nlp.evaluate(dev)
    return {
        "ms_per_step": {k: 1000 * v / steps for k, v in phases.items()},
        "total_ms_per_step": 1000 * total / steps,
        "evaluation_seconds": time.perf_counter() - start,
        "dev_mentions": len(dev),
    }


def main(settings: dict) -> dict:
    import torch

    torch.set_num_threads(settings["threads"])
    from spacy.training.initialize import init_nlp
    from spacy.training.loop import train
    from spacy.util import load_config

    import spacy_m3el

    config = load_config(settings["config"], overrides=settings["overrides"], interpolate=False)
    start = time.perf_counter()
    nlp = init_nlp(config, use_gpu=-1)
    init_seconds = time.perf_counter() - start
    if settings.get("profile_steps"):
        result = profile(nlp, config, settings["profile_steps"])
        return {"package": str(Path(spacy_m3el.__file__).parent), **result}
    counts = {"examples": 0, "steps": 0, "update_seconds": 0.0, "step_seconds": []}
    update = nlp.update

    def timed_update(examples, **kwargs):
        begin = time.perf_counter()
        result = update(examples, **kwargs)
        counts["step_seconds"].append(time.perf_counter() - begin)
        counts["update_seconds"] += counts["step_seconds"][-1]
        counts["examples"] += len(examples)
        counts["steps"] += 1
        return result

    nlp.update = timed_update
    output = Path(settings["output"])
    start = time.perf_counter()
    with open(os.devnull, "w") as devnull:
        train(nlp, output, use_gpu=-1, stdout=devnull, stderr=devnull)
    loop_seconds = time.perf_counter() - start
    meta = json.loads((output / "model-last" / "meta.json").read_text(encoding="utf8"))
    return {
        "package": str(Path(spacy_m3el.__file__).parent),
        "init_seconds": init_seconds,
        "loop_seconds": loop_seconds,
        **counts,
        "scores": {k: v for k, v in meta.get("performance", {}).items() if v is not None},
        "peak_rss_mib": peak_rss_mib(),
    }


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
