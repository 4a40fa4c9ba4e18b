"""CLIP embedding throughput: the same model through Triton (gRPC) and in-process, in one run.

The model is an open_clip architecture (default ``winnow-tiny-ViT``, winnow's own small config;
``--arch ViT-B-32`` is slow on CPU) with random weights (seed 0) saved to a checkpoint file here,
which both sides load. Both sides build it with one factory, :func:`clip_encoder`, which is
:class:`winnow.shared.models.clip.OpenClipEncoder` with torch's thread count set first:

* in-process: ``clip_encoder(...)`` in this process, ``embed_images`` / ``embed_texts`` called
  with ``--call-size`` items at a time (what the embed stage does with a batch of samples);
* Triton: the same factory inside the python-backend stub of each tower (``clip_bench_image``,
  ``clip_bench_text``, written by :func:`winnow.ops.triton.repository.clip_model_specs`), called
  through :func:`winnow.shared.triton.remote.remote_model` with the same call sizes.

Both use ``--batch`` as the model batch (the encoder's ``batch_size`` and the served
``max_batch_size``) and ``--threads`` torch threads (``torch.set_num_threads``; the stub gets it
through the factory's arguments, so no environment variable is involved). On the Triton side the
client (encoding, gRPC) and the server share the same cores as the model, which is the cost
being measured.

Inputs are real: scikit-image photos and openclipart PNGs (``tests.infra.images``), shrunk to at
most ``--side`` px on the longer side (what a downloader shard holds), and the clip-art titles as
texts. Each side is warmed up with one full pass; then ``--repeats`` passes alternate between the
two (the order flips each repeat) and the median pass is reported, as items per second. The
Triton embeddings are checked against the in-process ones.

To show where the Triton path's extra time goes, the run also prints, per item: the CPU time
of each process over the timed passes (this one, i.e. the in-process model or the Triton client;
``tritonserver``; the python-backend stubs; read from ``/proc``), Triton's own
statistics of the timed passes (``queue``: waiting for the model instance; ``input``: copying the
request into the stub's shared memory; ``execute``: the stub's ``execute``, i.e. unpacking and
decoding the rows in ``shared/triton/python_model.py`` plus the model itself; ``output``), the
client's fit (``contract.fit_image``: the image tower declares the encoder's ``image_fit``, so
the client sends each image resized and centre-cropped to the model's input size; ``--no-image-fit``
serves it without, and the client sends the original frames as before), its serialisation
(``contract.encode_image`` + ``pack_rows``, as ``shared/triton/remote.py`` does it), the stub's
unpacking and decoding alone, the model's own preprocessing (PIL resize and normalise) of the
original images in-process and of what the stub receives, and the raw frame's size. With several requests in flight the
server phases of different requests overlap, so they do not add up to the wall time; with
``--in-flight 1`` the wall time is the server's total plus the client and the gRPC transfer.

Run from the repository root::

    .venv/bin/python -m benchmarks.embed [--images 512] [--batch 32] [--repeats 5] [--json out.json]
    .venv/bin/python -m benchmarks.embed --arch ViT-B-32 --images 192 --repeats 3
    .venv/bin/python -m benchmarks.embed --no-image-fit    # the client sends the original frames
    .venv/bin/python -m benchmarks.embed --quick           # a small smoke run
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import structlog

from winnow.shared.logs import configure_logging

log = structlog.get_logger("benchmarks.embed")

ROOT = Path(__file__).resolve().parents[1]
FACTORY = "benchmarks.embed:clip_encoder"
MODEL = "clip_bench"


def clip_encoder(arch: str, pretrained: str | None, threads: int, batch_size: int):
    """``OpenClipEncoder`` with ``threads`` torch threads: the factory of both sides."""
    import torch

    from winnow.shared.models.clip import OpenClipEncoder

    torch.set_num_threads(threads)
    return OpenClipEncoder(arch, pretrained, batch_size=batch_size)


# --- inputs -------------------------------------------------------------------------------------


def load_images(count: int, side: int) -> tuple[list[np.ndarray], list[str]]:
    """``count`` real RGB images (photos first, then clip art) at most ``side`` px, and captions."""
    from PIL import Image

    from tests.infra.images import openclipart_images, skimage_photos, title_from_path

    photos = skimage_photos()
    clipart = openclipart_images(limit=max(0, 2 * count))  # spare ones for those that do not load
    if not clipart:
        log.warning("openclipart_missing", hint="apt-get install openclipart-png; photos are repeated instead")
    images: list[np.ndarray] = []
    captions: list[str] = []
    for path in [*photos, *clipart]:
        if len(images) == count:
            break
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(path) as im:
                    im.draft("RGB", (side, side))
                    im.thumbnail((side, side))
                    rgb = im.convert("RGB")
        except Exception as exc:  # noqa: BLE001 - a broken clip art is skipped
            log.debug("image_skipped", path=str(path), error=str(exc))
            continue
        if min(rgb.size) < 8:
            continue
        images.append(np.asarray(rgb))
        captions.append(title_from_path(path) or path.stem.replace("_", " "))
    if not images:
        raise SystemExit("no test images: scikit-image's data directory is missing")
    while len(images) < count:  # no clip art installed: cycle the photos
        images.append(images[len(images) % len(photos)])
        captions.append(captions[len(captions) % len(photos)])
    return images, captions


def save_random_checkpoint(arch: str, path: Path) -> str:
    """A random-weight checkpoint of ``arch``, saved as open_clip saves one (fixed seed)."""
    import open_clip
    import torch

    from winnow.shared.models.clip import register_winnow_configs

    register_winnow_configs()
    torch.manual_seed(0)
    model = open_clip.create_model(arch)
    torch.save({"state_dict": model.state_dict(), "epoch": 0}, path)
    return str(path)


# --- measurement --------------------------------------------------------------------------------


def one_pass(call: Callable[[list], np.ndarray], items: list, call_size: int) -> tuple[float, np.ndarray]:
    started = time.perf_counter()
    out = [call(items[start:start + call_size]) for start in range(0, len(items), call_size)]
    return time.perf_counter() - started, np.concatenate(out)


def per_item_ms(work: Callable[[], object], items: int, repeats: int = 3) -> float:
    """Median milliseconds per item of ``work`` (which handles ``items`` items)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return 1e3 * statistics.median(times) / items


def server_stats(url: str, model: str) -> dict[str, int]:
    """Triton's cumulative statistics of ``model``: counts and nanoseconds."""
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(url) as raw:
        stats = raw.get_inference_statistics(model, as_json=True)["model_stats"][0]
    inference = stats.get("inference_stats", {})
    out = {"executions": int(stats.get("execution_count", 0)), "requests": int(stats.get("inference_count", 0))}
    for key in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
        out[f"{key}_ns"] = int(inference.get(key, {}).get("ns", 0))
    return out


def stats_delta(before: dict[str, int], after: dict[str, int], rows: int) -> dict[str, float]:
    """Per-row milliseconds of each server phase between two snapshots, and the mean batch."""
    delta = {key: after[key] - before[key] for key in after}
    out = {f"server_{key[:-3]}_ms_per_row": delta[key] / 1e6 / rows for key in delta if key.endswith("_ns")}
    out["server_rows_per_execution"] = rows / max(1, delta["executions"])
    return out


def process_tree_cpu(root: int) -> dict[str, float]:
    """CPU seconds (user + system) of ``root`` and of its descendants, by command name."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    usage: dict[int, tuple[str, float]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended while listing
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        fields = text[text.rindex(")") + 2:].split()
        pid = int(stat.parent.name)
        parents[pid] = int(fields[1])
        usage[pid] = (name, (int(fields[11]) + int(fields[12])) / tick)
    tree, frontier = {root}, [root]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier and pid not in tree]
        tree.update(children)
        frontier = children
    out: dict[str, float] = {}
    for pid in tree & usage.keys():
        name, seconds = usage[pid]
        out[name] = out.get(name, 0.0) + seconds
    return out


class CpuMeter:
    """CPU seconds of this process ("client") and of the server's process tree (server, stubs)."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid

    def read(self) -> dict[str, float]:
        tree = process_tree_cpu(self.server_pid)
        stubs = sum(seconds for name, seconds in tree.items() if name.startswith("triton_python"))
        return {"client": time.process_time(), "server": sum(tree.values()) - stubs, "stubs": stubs}


def measure(name: str, sides: dict[str, Callable[[list], np.ndarray]], items: list, call_size: int,
            repeats: int, cpu: CpuMeter) -> tuple[dict[str, list[float]], dict[str, list[dict]], dict]:
    """Warm each side up, then ``repeats`` alternating passes: seconds and CPU seconds per pass, outputs."""
    outputs = {}
    for side, call in sides.items():
        seconds, outputs[side] = one_pass(call, items, call_size)
        log.info("warmed_up", what=name, side=side, seconds=round(seconds, 2))
    times: dict[str, list[float]] = {side: [] for side in sides}
    cpu_times: dict[str, list[dict]] = {side: [] for side in sides}
    order = list(sides)
    for repeat in range(repeats):
        for side in order if repeat % 2 == 0 else order[::-1]:
            before = cpu.read()
            seconds, _ = one_pass(sides[side], items, call_size)
            after = cpu.read()
            times[side].append(seconds)
            cpu_times[side].append({key: after[key] - before[key] for key in after})
            log.info("pass", what=name, side=side, repeat=repeat, seconds=round(seconds, 3),
                     per_second=round(len(items) / seconds, 1))
    return times, cpu_times, outputs


def cpu_ms_per_item(passes: list[dict], items: int) -> dict[str, float]:
    """Median CPU milliseconds per item of each process group over the passes, and their total."""
    out = {key: 1e3 * statistics.median(p[key] for p in passes) / items for key in passes[0]}
    out["total"] = 1e3 * statistics.median(sum(p.values()) for p in passes) / items
    return {key: round(value, 4) for key, value in out.items()}


# --- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="winnow-tiny-ViT", help="open_clip architecture (random weights)")
    parser.add_argument("--images", type=int, default=512, help="images, and as many texts")
    parser.add_argument("--side", type=int, default=512, help="longer side of the images, px")
    parser.add_argument("--batch", type=int, default=32, help="model batch on both sides")
    parser.add_argument("--call-size", type=int, default=64,
                        help="items per embed_images / embed_texts call (the stage's batch)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads on both sides")
    parser.add_argument("--in-flight", type=int, default=4, help="the Triton client's concurrent requests")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--image-fit", action=argparse.BooleanOptionalAction, default=True,
                        help="serve the image tower with the encoder's image_fit, so the client sends fitted images")
    parser.add_argument("--quick", action="store_true", help="smoke run: 64 items, 2 repeats")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.repeats = min(args.images, 64), min(args.repeats, 2)
    configure_logging("WARNING", json_format=False)
    for name in ("benchmarks", "winnow.shared"):  # open_clip logs its every step at INFO through the root logger
        logging.getLogger(name).setLevel(logging.INFO)

    from winnow.shared.triton import contract
    from winnow.shared.triton.client import TritonClient
    from winnow.shared.triton.remote import remote_model
    from winnow.ops.triton.repository import clip_model_specs, write_model_repository
    from winnow.ops.triton.server import TritonServer

    started = time.perf_counter()
    images, texts = load_images(args.images, args.side)
    pixels = sum(image.shape[0] * image.shape[1] for image in images) / len(images)
    log.info("inputs_ready", images=len(images), mean_pixels=round(pixels),
             seconds=round(time.perf_counter() - started, 1))

    with tempfile.TemporaryDirectory(prefix="winnow-bench-embed-") as tmp:
        tmp_path = Path(tmp)
        pretrained = save_random_checkpoint(args.arch, tmp_path / "random.pt")  # both sides load the same weights
        factory_kwargs = {"arch": args.arch, "pretrained": pretrained, "threads": args.threads,
                          "batch_size": args.batch}
        local = clip_encoder(**factory_kwargs)
        image_fit = local.image_fit if args.image_fit else None
        specs = clip_model_specs(MODEL, FACTORY, dim=local.dim, image_fit=image_fit, factory_kwargs=factory_kwargs,
                                 max_batch_size=args.batch)
        repository = write_model_repository(tmp_path / "repository", specs)
        server = TritonServer(repository, tmp_path / "work", models=[spec.name for spec in specs], python_path=[ROOT])
        server.start(timeout=600)
        try:
            with TritonClient(server.grpc_url, infer_timeout_s=600, max_in_flight=args.in_flight) as client:
                remote = remote_model("clip", client, MODEL)
                results = {}
                for kind, items, local_call, remote_call in (
                    ("images", images, local.embed_images, remote.embed_images),
                    ("texts", texts, local.embed_texts, remote.embed_texts),
                ):
                    tower = contract.clip_tower_name(MODEL, contract.ModelKind.CLIP_IMAGE if kind == "images"
                                                     else contract.ModelKind.CLIP_TEXT)
                    before = server_stats(server.grpc_url, tower)
                    times, cpu_times, outputs = measure(
                        kind, {"in_process": local_call, "triton": remote_call}, items, args.call_size,
                        args.repeats, CpuMeter(server.proc.pid))
                    after = server_stats(server.grpc_url, tower)
                    difference = float(np.abs(outputs["in_process"] - outputs["triton"]).max())
                    if difference > 1e-3:
                        raise SystemExit(f"{kind}: Triton and in-process embeddings differ by {difference}")
                    rows = len(items) * (args.repeats + 1)
                    results[kind] = {
                        side: {"per_second": round(len(items) / statistics.median(seconds), 1),
                               "median_seconds": round(statistics.median(seconds), 4),
                               "seconds": [round(s, 4) for s in seconds],
                               "cpu_ms_per_item": cpu_ms_per_item(cpu_times[side], len(items))}
                        for side, seconds in times.items()
                    }
                    results[kind]["ratio"] = round(results[kind]["triton"]["per_second"]
                                                   / results[kind]["in_process"]["per_second"], 3)
                    results[kind]["max_abs_difference"] = difference
                    results[kind]["breakdown"] = stats_delta(before, after, rows)
        finally:
            server.stop()

    results["images"]["breakdown"].update(image_costs(local, images, args.batch, image_fit))
    results["texts"]["breakdown"].update(text_costs(texts, args.batch))
    for kind in ("images", "texts"):
        results[kind]["breakdown"] = {key: round(value, 4) for key, value in results[kind]["breakdown"].items()}
    figures = {"arch": args.arch, "dim": local.dim, "items": len(images), "mean_image_pixels": round(pixels),
               "image_fit": image_fit, "batch": args.batch, "call_size": args.call_size, "threads": args.threads,
               "in_flight": args.in_flight, "repeats": args.repeats, "cpus": os.cpu_count(), **results}
    report(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


def image_costs(local, images: list[np.ndarray], batch: int, image_fit: int | None) -> dict[str, float]:
    """Milliseconds per image of the client's fit, the serialisation on each end and the model's preprocessing."""
    from PIL import Image

    from winnow.shared.triton import contract

    costs = {}
    sent = images
    if image_fit is not None:
        sent = [contract.fit_image(image, image_fit) for image in images]
        costs["client_fit_ms_per_row"] = per_item_ms(
            lambda: [contract.fit_image(image, image_fit) for image in images], len(images))
    groups = [sent[start:start + batch] for start in range(0, len(sent), batch)]
    packed = [contract.pack_rows([contract.encode_image(image) for image in group]) for group in groups]

    def decode() -> None:
        for rows, lengths in packed:
            [contract.decode_image(row) for row in contract.unpack_rows(rows, lengths)]

    costs.update({
        "client_encode_pack_ms_per_row": per_item_ms(
            lambda: [contract.pack_rows([contract.encode_image(image) for image in group]) for group in groups],
            len(images)),
        "stub_unpack_decode_ms_per_row": per_item_ms(decode, len(images)),
        "preprocess_ms_per_row": per_item_ms(
            lambda: [local.preprocess(Image.fromarray(image)) for image in images], len(images), repeats=1),
        "stub_preprocess_ms_per_row": per_item_ms(
            lambda: [local.preprocess(Image.fromarray(image)) for image in sent], len(images), repeats=1),
        "frame_kb_per_row": sum(len(contract.encode_image(image)) for image in sent) / len(sent) / 1024,
    })
    return costs


def text_costs(texts: list[str], batch: int) -> dict[str, float]:
    from winnow.shared.triton import contract

    groups = [texts[start:start + batch] for start in range(0, len(texts), batch)]
    return {"client_encode_pack_ms_per_row": per_item_ms(
        lambda: [contract.pack_rows([text.encode("utf-8") for text in group]) for group in groups], len(texts))}


_LABELS = {  # breakdown keys, in print order, and how they read
    "server_queue_ms_per_row": "queue",
    "server_compute_input_ms_per_row": "input",
    "server_compute_infer_ms_per_row": "execute",
    "server_compute_output_ms_per_row": "output",
    "client_fit_ms_per_row": "client fit",
    "client_encode_pack_ms_per_row": "client encode+pack",
    "stub_unpack_decode_ms_per_row": "stub unpack+decode",
    "preprocess_ms_per_row": "preprocess in-process",
    "stub_preprocess_ms_per_row": "preprocess in the stub",
}


def report(figures: dict) -> None:
    fit = f"fitted to {figures['image_fit']} px by the client" if figures["image_fit"] else "sent as they are"
    print(f"embed {figures['arch']} (dim {figures['dim']}): {figures['items']} images "
          f"(mean {figures['mean_image_pixels']:,} px, {fit}) and {figures['items']} texts, batch {figures['batch']}, "
          f"{figures['call_size']} per call, {figures['threads']} torch threads each side, "
          f"{figures['in_flight']} requests in flight, median of {figures['repeats']}, {figures['cpus']} CPUs")
    for kind in ("images", "texts"):
        result = figures[kind]
        local, triton = result["in_process"], result["triton"]
        print(f"  {kind:6s} in-process {local['per_second']:9.1f}/s   triton {triton['per_second']:9.1f}/s   "
              f"ratio {result['ratio']:.2f}x   (max |diff| {result['max_abs_difference']:.1e})")
        breakdown = result["breakdown"]
        parts = [f"{label} {breakdown[key]:.3g}" for key, label in _LABELS.items() if key in breakdown]
        extra = f", frame {breakdown['frame_kb_per_row']:.0f} KB" if "frame_kb_per_row" in breakdown else ""
        cpu = triton["cpu_ms_per_item"]
        print(f"         cpu ms per {kind[:-1]}: in-process {local['cpu_ms_per_item']['total']:.3g}; triton "
              f"{cpu['total']:.3g} = client {cpu['client']:.3g} + tritonserver {cpu['server']:.3g} "
              f"+ stub {cpu['stubs']:.3g}")
        print(f"         ms per {kind[:-1]} in triton: {', '.join(parts[:4])} "
              f"({breakdown['server_rows_per_execution']:.1f} rows per execution)")
        print(f"         ms per {kind[:-1]} alone: {', '.join(parts[4:])}{extra}")


if __name__ == "__main__":
    sys.exit(main())
