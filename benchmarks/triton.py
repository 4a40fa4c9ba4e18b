"""Triton transport: server start time, request latency and throughput of trivial models.

The models are the test suite's toys (``tests.triton.toy_models``), which cost next to nothing,
so the numbers are the transport's own: gRPC, the dynamic batcher, the python-backend stub and
winnow's framing. Three measurements:

* start: ``TritonServer.start()`` until every model is ready;
* latency: one caption per request, one request at a time (p50 and p99), with the batcher's
  queue delay at 0 and at 2 ms;
* throughput: 8 client threads, for captions (1 per request) and for 512 x 512 photos (4 per
  request, raw frames), in rows per second, beside the executions the server ran.

Run from the repository root::

    .venv/bin/python -m benchmarks.triton [--seconds 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import tritonclient.grpc as grpcclient

from winnow.shared.logs import configure_logging
from winnow.shared.triton.client import TritonClient
from winnow.shared.triton.contract import ModelKind
from winnow.shared.triton.remote import RemoteImageNSFW, RemoteTextToxicity
from winnow.ops.triton.repository import ModelSpec, write_model_repository
from winnow.ops.triton.server import TritonServer

ROOT = Path(__file__).resolve().parents[1]
TOY = "tests.triton.toy_models"
MODELS = [
    ModelSpec("text_nodelay", f"{TOY}:WordListToxicity", ModelKind.TEXT_TOXICITY, max_batch_size=64,
              max_queue_delay_us=0),
    ModelSpec("text_2ms", f"{TOY}:WordListToxicity", ModelKind.TEXT_TOXICITY, max_batch_size=64,
              max_queue_delay_us=2000),
    ModelSpec("image_2ms", f"{TOY}:BrightnessNSFW", ModelKind.IMAGE_NSFW, max_batch_size=32,
              max_queue_delay_us=2000),
]


def latency(model: RemoteTextToxicity, seconds: float) -> dict[str, float]:
    samples = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        model.score(["you idiot"])
        samples.append(time.perf_counter() - started)
    samples.sort()
    return {"p50_ms": 1e3 * statistics.median(samples), "p99_ms": 1e3 * samples[int(0.99 * (len(samples) - 1))],
            "requests": len(samples)}


def throughput(call, rows_per_call: int, seconds: float, threads: int = 8) -> dict[str, float]:
    counts = [0] * threads
    stop = time.monotonic() + seconds

    def work(i: int) -> None:
        while time.monotonic() < stop:
            call()
            counts[i] += 1

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    return {"rows_per_s": sum(counts) * rows_per_call / elapsed, "requests_per_s": sum(counts) / elapsed}


def executions(url: str, model: str) -> int:
    with grpcclient.InferenceServerClient(url) as raw:
        return int(raw.get_inference_statistics(model, as_json=True)["model_stats"][0].get("execution_count", 0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    configure_logging("WARNING", json_format=False)
    from skimage import data

    photo = data.astronaut()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="winnow-bench-triton-") as tmp:
        repository = write_model_repository(Path(tmp) / "repository", MODELS)
        with TritonServer(repository, Path(tmp) / "work", python_path=[ROOT]) as server:
            results["start"] = {"seconds": server.start_seconds, "models": len(MODELS)}
            with TritonClient(server.grpc_url, max_in_flight=8) as client:
                for name in ("text_nodelay", "text_2ms"):
                    results[f"latency_{name}"] = latency(RemoteTextToxicity(client, name), args.seconds)
                text = RemoteTextToxicity(client, "text_2ms")
                before = executions(server.grpc_url, "text_2ms")
                measured = throughput(lambda: text.score(["you idiot"]), 1, args.seconds)
                measured["executions"] = executions(server.grpc_url, "text_2ms") - before
                results["throughput_text_1_per_request"] = measured
                image = RemoteImageNSFW(client, "image_2ms")
                photos = [photo] * 4
                before = executions(server.grpc_url, "image_2ms")
                measured = throughput(lambda: image.score(photos), 4, args.seconds)
                measured["executions"] = executions(server.grpc_url, "image_2ms") - before
                results["throughput_image_512px_4_per_request"] = measured
    for name, values in results.items():
        print(f"{name:40s} " + "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                         for k, v in values.items()))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
