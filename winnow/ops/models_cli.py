"""``winnow models``: list the models, write the Triton model repository, fetch production weights.

    winnow models list                               every preset, its weights, whether they are here
    winnow models repository --out DIR [--preset P]  the Triton model repository for a preset
    winnow models fetch [--dest DIR]                 DataComp's production weights (needs the internet)
    winnow models serve --repository DIR             Triton on that repository, in the foreground
"""

from __future__ import annotations

import argparse
import hashlib
import urllib.request
from pathlib import Path

from rich.console import Console
from rich.table import Table

from winnow.shared.models.registry import ModelPreset, all_presets, models_dir, preset



def add_parser(subparsers) -> None:
    models = subparsers.add_parser("models", help="list, serve and fetch the models")
    commands = models.add_subparsers(dest="models_command", required=True)
    listing = commands.add_parser("list", help="every preset and whether its weights are present")
    listing.set_defaults(func=list_models)
    repository = commands.add_parser("repository", help="write the Triton model repository for a preset")
    repository.add_argument("--out", required=True)
    repository.add_argument("--preset", default="offline")
    repository.add_argument("--clip_model", action="append", default=[], metavar="KEY=ARCH[:CHECKPOINT]",
                            help="also serve a CLIP model as clip_KEY (e.g. b32=ViT-B-32:openai)")
    repository.set_defaults(func=write_repository)
    fetch = commands.add_parser("fetch", help="download DataComp's production weights (needs the internet)")
    fetch.add_argument("--dest", default="", help="default: WINNOW_MODELS_DIR or ~/.cache/winnow/models")
    fetch.set_defaults(func=fetch_weights)
    clip = commands.add_parser("train-clip", help="train the small offline CLIP on openclipart (minutes on a CPU)")
    clip.add_argument("--workdir", default="runs/offline-clip")
    clip.add_argument("--samples_seen", type=int, default=60_000)
    clip.add_argument("--eval_data", default="", help="local evaluation sets to report on (winnow eval-data build)")
    clip.set_defaults(func=train_clip)
    serve = commands.add_parser("serve", help="run Triton on a model repository until interrupted")
    serve.add_argument("--repository", required=True)
    serve.add_argument("--workdir", default="")
    serve.set_defaults(func=serve_repository)


def weights_present(chosen: ModelPreset) -> str:
    """'yes', 'no' and why, without loading the model."""
    import importlib.util

    from winnow.shared.models.production import PRODUCTION_WEIGHTS

    if importlib.util.find_spec(chosen.factory.partition(":")[0]) is None:
        return "no (module missing)"
    if not chosen.files:
        return "yes (in a package)"
    missing = [name for name in chosen.files if not (models_dir() / PRODUCTION_WEIGHTS[name].filename).exists()]
    return f"no: winnow models fetch ({', '.join(missing)})" if missing else f"yes ({models_dir()})"


def list_models(args: argparse.Namespace) -> int:
    table = Table(title="winnow models")
    for column in ("kind", "preset", "weights", "threshold", "present"):
        table.add_column(column)
    for chosen in all_presets():
        table.add_row(chosen.kind, chosen.preset, chosen.weights,
                      "" if chosen.threshold is None else str(chosen.threshold), weights_present(chosen))
    Console(width=max(Console().width, 110)).print(table)
    return 0


def repository_specs(preset_name: str, clip_models: list[str]):
    """The Triton model specs serving every model kind of a preset (and any CLIP models)."""
    from winnow.shared.models.clip import parse_clip_model
    from winnow.shared.triton.contract import ModelKind
    from winnow.ops.triton.repository import ModelSpec, clip_model_specs

    specs = []
    for chosen in all_presets():
        if chosen.preset != preset_name:
            continue
        fields = {}
        if chosen.kind == "near_duplicate":
            model = chosen.build()
            fields = {"dim": model.dim, "threshold": model.threshold}
        specs.append(ModelSpec(chosen.triton_model, chosen.factory, ModelKind(chosen.kind),
                               factory_kwargs=chosen.arguments(), **fields))
    for spec in clip_models:
        key, arch, pretrained = parse_clip_model(spec)
        from winnow.shared.models.clip import OpenClipEncoder

        encoder = OpenClipEncoder(arch, pretrained)
        specs += clip_model_specs(f"clip_{key}", "winnow.shared.models.clip:OpenClipEncoder", dim=encoder.dim,
                                  image_fit=encoder.image_fit,
                                  factory_kwargs={"arch": arch, "pretrained": pretrained})
    return specs


def write_repository(args: argparse.Namespace) -> int:
    from winnow.ops.triton.repository import write_model_repository

    preset("text_toxicity", args.preset)  # an unknown preset fails here, clearly
    specs = repository_specs(args.preset, args.clip_model)
    write_model_repository(Path(args.out), specs)
    Console().print(f"wrote {len(specs)} models to {args.out}: {', '.join(s.name for s in specs)}")
    return 0


def fetch_weights(args: argparse.Namespace) -> int:
    from winnow.shared.models.production import PRODUCTION_WEIGHTS

    console = Console()
    dest = Path(args.dest) if args.dest else models_dir()
    for name, entry in PRODUCTION_WEIGHTS.items():
        url, filename, sha256 = entry[0], entry[1], entry[2]
        target = dest / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            console.print(f"{name}: {target} already here")
            continue
        console.print(f"{name}: {url}")
        partial = target.with_suffix(target.suffix + ".part")
        digest = hashlib.sha256()
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if sha256 and digest.hexdigest() != sha256:
            partial.unlink()
            raise ValueError(f"{name}: sha256 {digest.hexdigest()} is not the published {sha256}")
        partial.rename(target)
    import open_clip

    for arch in ("ViT-B-32", "ViT-L-14"):
        console.print(f"open_clip {arch} openai")
        open_clip.create_model(arch, pretrained="openai")
    return 0


def serve_repository(args: argparse.Namespace) -> int:
    import tempfile
    import time

    from winnow.ops.triton.server import TritonServer

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="winnow-triton-"))
    with TritonServer(Path(args.repository), workdir) as server:
        Console().print(f"Triton serving {args.repository} at {server.grpc_url} (gRPC); Ctrl-C stops it")
        try:
            while server.proc is not None and server.proc.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return 0


def train_clip(args: argparse.Namespace) -> int:
    from winnow.services.trainer.offline_clip import MODEL_FILE, train_offline_clip

    report = train_offline_clip(Path(args.workdir), models_dir(), args.samples_seen, args.eval_data)
    console = Console()
    console.print_json(data=report)
    console.print(f"weights: {models_dir() / MODEL_FILE}; use --clip_model b32=winnow-tiny-ViT:{models_dir() / MODEL_FILE}")
    return 0
