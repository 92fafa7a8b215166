"""The Ray engine on a local Ray (2 CPUs, loopback only): same links as the local
engine, and nothing lost or doubled when an actor or the driver is killed."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy
import pytest

from spacy_m3el.pipeline.mapped_file import map_safetensors
from spacy_m3el.scaleout.engines import CorpusJob, run_corpus_job
from spacy_m3el.scaleout.output import finished_shards, read_links

from .corpus import assert_close_links

pytest.importorskip("ray")
# A loopback-only test cluster: no token authentication between driver and head.
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
SETTINGS = ["--shard-size", "4", "--batch-size", "4", "--top-k", "3"]
CACHE = Path("m3el_linker") / "entity_cache.safetensors"
RAY_CLI = str(Path(sys.executable).parent / "ray")  # Ray's command beside this Python


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster():
    """A Ray head on the loopback with 2 CPUs, joined through RAY_ADDRESS."""
    port = free_port()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must be short
    env = dict(os.environ, **RAY_ENV)
    subprocess.run(
        [RAY_CLI, "start", "--head", "--num-cpus=2", "--node-ip-address=127.0.0.1",
         f"--port={port}", "--include-dashboard=false", "--disable-usage-stats",
         f"--temp-dir={temp}"],
        check=True, env=env, capture_output=True,
    )  # fmt: skip
    yield f"127.0.0.1:{port}"
    subprocess.run([RAY_CLI, "stop", "--force"], env=env, capture_output=True)
    shutil.rmtree(temp, ignore_errors=True)


def command(tool, *args, address=None, **popen):
    env = dict(os.environ, **RAY_ENV)
    env.pop("RAY_ADDRESS", None)
    if address:
        env["RAY_ADDRESS"] = address
    argv = [sys.executable, "-m", "spacy_m3el", tool, *map(str, args)]
    return subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen
    )


def link(model, captions, output, address=None):
    process = command(
        "link-corpus", model, captions, output, "--engine", "ray", *SETTINGS, address=address
    )
    log, _ = process.communicate(timeout=300)
    assert process.returncode == 0, log
    return log


@pytest.fixture(scope="module")
def ray_links(corpus_model, captions, tmp_path_factory):
    """A clean Ray run on a Ray it starts itself (no RAY_ADDRESS)."""
    output = tmp_path_factory.mktemp("ray") / "out"
    log = link(corpus_model, captions, output)
    return output, log


def test_the_ray_engine_links_like_the_local_engine(corpus_model, captions, ray_links, tmp_path):
    output, log = ray_links
    assert "12 shards, 0 finished earlier, 12 to link with the ray engine" in log
    assert "Linked 48 docs in 12 shards" in log
    local = tmp_path / "local"
    job = CorpusJob(corpus_model, [captions], local, shard_size=4, batch_size=4, top_k=3)
    run_corpus_job(job, stream=open(os.devnull, "w"))
    assert_close_links(read_links(output), read_links(local))


def actor_pids(name: str):
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and name in (entry / "cmdline").read_text():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def wait_for(condition, process, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_killed_actor_is_replaced_and_its_shard_redone(
    corpus_model, captions, ray_links, ray_cluster, tmp_path
):
    output = tmp_path / "out"
    process = command(
        "link-corpus", corpus_model, captions, output, "--engine", "ray", *SETTINGS,
        address=ray_cluster,
    )  # fmt: skip
    wait_for(lambda: len(finished_shards(output)) >= 1 and actor_pids("ShardActor"), process)
    victim = actor_pids("ShardActor")[0]
    os.kill(victim, signal.SIGKILL)
    assert len(finished_shards(output)) < 12  # killed mid-run
    log, _ = process.communicate(timeout=300)
    assert process.returncode == 0, log
    rows = read_links(output)
    assert rows == read_links(ray_links[0])
    assert len({r["doc_id"] for r in rows}) == len(rows) == 48


def test_a_killed_driver_is_resumed_by_the_same_command(
    corpus_model, captions, ray_links, ray_cluster, tmp_path
):
    output = tmp_path / "out"
    process = command(
        "link-corpus", corpus_model, captions, output, "--engine", "ray", *SETTINGS,
        address=ray_cluster, start_new_session=True,
    )  # fmt: skip
    wait_for(lambda: len(finished_shards(output)) >= 2, process)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished = len(finished_shards(output))
    assert 2 <= finished < 12
    log = link(corpus_model, captions, output, address=ray_cluster)
    # The killed driver's actors may finish the shard they were on before the rerun starts.
    resumed = int(re.search(r"12 shards, (\d+) finished earlier", log).group(1))
    assert finished <= resumed < 12
    rows = read_links(output)
    assert rows == read_links(ray_links[0])
    assert len({r["doc_id"] for r in rows}) == len(rows) == 48


def model_without_cache(source: Path, target: Path, entity_batch_size: int) -> Path:
    """A copy of a pipeline without its entity cache, encoding entities in small batches."""
    shutil.copytree(source, target)
    (target / CACHE).unlink()
    config = (target / "config.cfg").read_text()
    config = re.sub(r"entity_batch_size = \d+", f"entity_batch_size = {entity_batch_size}", config)
    (target / "config.cfg").write_text(config)
    return target


def test_build_cache_on_ray_equals_the_single_process_build(corpus_model, ray_cluster, tmp_path):
    """Entity batches of 2: the 6 entities are encoded as 3 runs on the actors."""
    local = model_without_cache(corpus_model, tmp_path / "local", 2)
    on_ray = model_without_cache(corpus_model, tmp_path / "ray", 2)
    for model, options in ((local, []), (on_ray, ["--engine", "ray"])):
        process = command("build-cache", model, *options, address=ray_cluster)
        log, _ = process.communicate(timeout=300)
        assert process.returncode == 0, log
    metadata, arrays = map_safetensors(on_ray / CACHE)
    expected_metadata, expected = map_safetensors(local / CACHE)
    assert metadata == expected_metadata and sorted(arrays) == sorted(expected)
    for key, value in expected.items():
        assert numpy.array_equal(arrays[key], value), key


def test_the_ray_engine_needs_a_built_cache(corpus_model, captions, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(corpus_model, model)
    (model / CACHE).unlink()
    process = command("link-corpus", model, captions, tmp_path / "out", "--engine", "ray")
    log, _ = process.communicate(timeout=300)
    assert process.returncode == 1
    assert "no current entity cache" in log and "build-cache" in log
