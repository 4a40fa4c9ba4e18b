"""The trainer: DataComp's open_clip arguments, and real CLIP training on real image-text shards.

The training tests use 256 openclipart images with their titles, written as winnow shards, and
a scale like ``tiny`` but shorter: 3 checkpoints of 8 steps of 32 samples, on the CPU.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from winnow.services.trainer import cli
from winnow.services.trainer.scales import load_scale
from winnow.services.trainer.train import (
    TrainConfig,
    latest_checkpoint,
    open_clip_arguments,
    plan_run,
    read_loss_history,
    source_patterns,
    train,
    train_data_argument,
)
from winnow.shared.shards import ShardWriter, SUCCESS, shard_prefix

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")
pytest.importorskip("open_clip_train")

REPO_ROOT = Path(__file__).resolve().parents[2]
STEPS_PER_CHECKPOINT, CHECKPOINTS, BATCH = 8, 3, 32
STEPS = STEPS_PER_CHECKPOINT * CHECKPOINTS


# ---------------------------------------------------------------------------------------------
# Arguments, without training


def parsed(args: list[str]) -> argparse.Namespace:
    from open_clip_train.params import parse_args

    return parse_args(args)  # open_clip's own parser: every flag we pass must exist there


def test_small_scale_on_eight_gpus_gets_datacomps_arguments(tmp_path):
    (tmp_path / "00000000.tar").write_bytes(b"")
    config = TrainConfig(scale="small", data=(str(tmp_path),), output_dir="runs", exp_name="x", device="cuda")
    args = open_clip_arguments(config, load_scale("small"), world_size=8)
    options = parsed(args)
    assert options.model == "ViT-B-32"
    assert options.train_data == f"{tmp_path}/00000000.tar"
    assert options.train_num_samples == 12_800_000 // 5 and options.epochs == 5  # samples seen fixed by the scale
    assert options.batch_size == 4096 // 8  # the scale's batch is global
    assert (options.lr, options.warmup, options.wd, options.beta2) == (5e-4, 500, 0.2, 0.98)  # 0.98: open_clip's ViT default
    assert options.opt == "adamw" and options.lr_scheduler == "cosine" and options.precision == "amp"
    assert options.dataset_type == "webdataset" and options.dataset_resampled
    assert options.local_loss and options.gather_with_grad and options.ddp_static_graph and options.grad_checkpointing
    assert options.save_most_recent and options.save_frequency == 1 and options.resume == "latest"
    assert (options.logs, options.name, options.report_to, options.seed, options.workers) == ("runs", "x", "none", 0, 4)
    assert options.train_data_upsampling_factors is None


def test_xlarge_scale_sets_beta2_and_cpu_runs_fp32(tmp_path):
    (tmp_path / "00000000.tar").write_bytes(b"")
    config = TrainConfig(scale="xlarge", data=(str(tmp_path),), output_dir="runs", device="cpu", num_checkpoints=8,
                         accum_freq=2)
    options = parsed(open_clip_arguments(config, load_scale("xlarge"), world_size=16))
    assert (options.model, options.lr, options.warmup, options.beta2) == ("ViT-L-14", 1e-3, 10_000, 0.95)
    assert options.batch_size == 90112 // (16 * 2) and options.accum_freq == 2
    assert options.train_num_samples == 12_800_000_000 // 8 and options.epochs == 8
    assert options.precision == "fp32" and options.name == "xlarge_scale"
    assert not options.grad_checkpointing  # only on GPUs, unless asked for


def test_global_batch_must_split_over_ranks():
    with pytest.raises(ValueError, match="does not split over 3 ranks"):
        plan_run(load_scale("small"), num_checkpoints=5, world_size=3)


def test_plan_rounds_epochs_as_open_clips_loader_does():
    # debug: 128k / 5 = 25,600 per checkpoint = 25 batches of 1024, rounded up to 4 workers' multiple: 28
    plan = plan_run(load_scale("debug"), num_checkpoints=5, workers=4)
    assert (plan.steps_per_epoch, plan.steps, plan.samples_seen) == (28, 140, 140 * 1024)
    plan = plan_run(load_scale("small"), num_checkpoints=5, world_size=8, workers=4)
    assert plan.per_rank_batch_size == 512 and plan.steps_per_epoch == 628  # ceil(625 / 4) * 4


def winnow_shard(root: Path, shard_id: int, finished: bool = True) -> None:
    writer = ShardWriter(shard_prefix(str(root), shard_id), stage="reshard", job_id="j", shard_id=shard_id)
    writer.add({"key": f"{shard_id:08d}0", "uid": f"{shard_id:032x}", "text": "a cat", "status": SUCCESS},
               {"jpg": b"\xff\xd8", "txt": b"a cat"})
    writer.close()
    if not finished:
        os.remove(f"{shard_prefix(str(root), shard_id)}_stats.json")


def test_shard_folder_becomes_brace_patterns(tmp_path):
    for shard_id in (0, 1, 2, 5, 6, 9):
        winnow_shard(tmp_path, shard_id)
    winnow_shard(tmp_path, 10, finished=False)  # no completion marker yet: left out
    assert source_patterns(str(tmp_path)) == [f"{tmp_path}/{{00000000..00000002}}.tar",
                                              f"{tmp_path}/{{00000005..00000006}}.tar", f"{tmp_path}/00000009.tar"]


def test_folder_without_markers_uses_every_tar(tmp_path):
    for shard_id in range(3):
        (tmp_path / f"{shard_id:05d}.tar").write_bytes(b"")
    assert source_patterns(str(tmp_path)) == [f"{tmp_path}/{{00000..00002}}.tar"]


def test_patterns_and_pipes_pass_through(tmp_path):
    assert source_patterns("/data/{00000000..00000099}.tar") == ["/data/{00000000..00000099}.tar"]
    assert source_patterns("pipe:cat /data/0.tar") == ["pipe:cat /data/0.tar"]


@pytest.mark.parametrize("source, error, message", [
    ("missing", FileNotFoundError, "does not exist"),
    ("missing.tar", FileNotFoundError, "does not exist"),
    ("https://example.org/shards", ValueError, "webdataset cannot list a https folder"),
])
def test_bad_sources(tmp_path, source, error, message):
    path = source if "://" in source else str(tmp_path / source)
    with pytest.raises(error, match=message):
        source_patterns(path)


def test_empty_folder_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no finished .tar shards"):
        source_patterns(str(tmp_path))


def test_weights_follow_each_sources_patterns(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    for shard_id in (0, 1, 3):
        winnow_shard(a, shard_id)
    winnow_shard(b, 0)
    data, factors = train_data_argument([str(a), str(b)], [0.7, 0.3])
    assert data == f"{a}/{{00000000..00000001}}.tar::{a}/00000003.tar::{b}/00000000.tar"
    # 3 samples in a, 1 in b: a's shards are drawn 0.7 * 4 / 3 times as often as uniform, b's 0.3 * 4 / 1
    assert factors == "0.93333333::0.93333333::1.2"
    config = TrainConfig(scale="tiny", data=(str(a), str(b)), data_weights=(0.7, 0.3), output_dir="o", device="cpu")
    assert parsed(open_clip_arguments(config, load_scale("tiny"))).train_data_upsampling_factors == factors


@pytest.mark.parametrize("changes, message", [
    ({"data": ()}, "no training data"),
    ({"data_weights": (1.0,)}, "1 data weights for 2 data sources"),
    ({"data_weights": (1.0, 0.0)}, "must be positive"),
    ({"num_checkpoints": 0}, "num_checkpoints must be positive"),
    ({"precision": "fp8"}, "unknown precision"),
    ({"output_dir": "s3://bucket/runs"}, "must be a local folder"),
])
def test_bad_configs(changes, message):
    config = TrainConfig(**{"scale": "tiny", "data": ("a", "b"), "output_dir": "out", **changes})
    with pytest.raises(ValueError, match=message):
        config.validate()


def test_cli_options_make_the_config():
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["train", "--scale", "small", "--data_dir", "a", "--data_dir", "b", "--data_weights", "0.7",
                              "0.3", "--output_dir", "out", "--exp_name", "e", "--num_checkpoints", "8",
                              "--workers", "2", "--seed", "3", "--resume", "none", "--no_grad_checkpointing"])
    config = cli.config_from_args(args)
    assert (config.scale, config.data, config.data_weights) == ("small", ("a", "b"), (0.7, 0.3))
    assert (config.output_dir, config.exp_name, config.num_checkpoints, config.workers, config.seed) == (
        "out", "e", 8, 2, 3)
    assert config.resume is None and config.grad_checkpointing is False
    # DataComp's own spelling
    args = parser.parse_args(["train", "--scale", "small", "--data_dir", "a::b", "--data_weights", "1::2",
                              "--output_dir", "out"])
    assert cli.config_from_args(args).data == ("a", "b") and cli.config_from_args(args).data_weights == (1.0, 2.0)


def test_loss_history_keeps_the_resumed_runs_lines(tmp_path):
    line = ("2026-01-01,00:00:00 | INFO | Train Epoch: {e} [{n:>3}/64 ({p}%)] Data (t): 0.010 Batch (t): 0.300, "
            "106.667/s, 106.667/s/gpu LR: {lr:5f} Logit Scale: 14.286 Contrastive_loss: {loss} ({loss}) "
            "Loss: {loss} ({loss})")
    log = tmp_path / "out.log"
    log.write_text("\n".join([
        line.format(e=0, n=32, p=50, lr=1e-4, loss=3.5), line.format(e=0, n=64, p=100, lr=2e-4, loss=3.4),
        line.format(e=1, n=32, p=50, lr=3e-4, loss=3.3),  # then killed; resumed from epoch 1:
        "2026-01-01,00:00:09 | INFO | => resuming checkpoint 'x/epoch_latest.pt' (epoch 1)",
        line.format(e=1, n=32, p=50, lr=3e-4, loss=3.1), line.format(e=1, n=64, p=100, lr=4e-4, loss=3.0),
    ]))
    history = read_loss_history(log, global_batch_size=32, steps_per_epoch=2)
    assert [(r.epoch, r.step, r.samples_seen, r.loss, r.lr) for r in history] == [
        (0, 1, 32, 3.5, 1e-4), (0, 2, 64, 3.4, 2e-4), (1, 3, 96, 3.1, 3e-4), (1, 4, 128, 3.0, 4e-4)]
    assert history[0].samples_per_second == pytest.approx(106.667)


def test_unknown_architecture_fails_before_training(tmp_path, shards):
    scale = tmp_path / "bad.json"
    scale.write_text(json.dumps({"model": "no-such-ViT", "samples_seen": 64, "batch_size": 32,
                                 "learning_rate": 1e-3, "warmup": 1}))
    with pytest.raises(ValueError, match="no architecture 'no-such-ViT'"):
        train(TrainConfig(scale=str(scale), data=(str(shards),), output_dir=str(tmp_path), device="cpu"))


def test_no_checkpoint_yet(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        latest_checkpoint(tmp_path, "run")


# ---------------------------------------------------------------------------------------------
# Training


@pytest.fixture(scope="module")
def samples() -> list[tuple[str, bytes]]:
    from tests.trainer.data import clipart_samples

    return clipart_samples(4 * 64)


@pytest.fixture(scope="module")
def shards(tmp_path_factory, samples) -> Path:
    """4 winnow shards of 64 real images (64 px JPEG) with their titles as captions."""
    from tests.trainer.data import write_clipart_shards

    root = tmp_path_factory.mktemp("shards")
    assert write_clipart_shards(root, shards=4, per_shard=64, side=64) == samples
    return root


@pytest.fixture(scope="module")
def scale_file(tmp_path_factory) -> Path:
    """The tiny scale, shortened to 24 steps."""
    tiny = load_scale("tiny").to_json()
    tiny.pop("name")
    tiny["samples_seen"] = STEPS * BATCH
    path = tmp_path_factory.mktemp("scale") / "tiny24.json"
    path.write_text(json.dumps(tiny))
    return path


def config_for(scale_file: Path, shards: Path, output_dir: Path, exp_name: str) -> TrainConfig:
    return TrainConfig(scale=str(scale_file), data=(str(shards),), output_dir=str(output_dir), exp_name=exp_name,
                       num_checkpoints=CHECKPOINTS, workers=0, seed=0, device="cpu", log_every_n_steps=1,
                       grad_checkpointing=False, save_frequency=0)


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory, scale_file, shards):
    """One uninterrupted training run, in this process."""
    output_dir = tmp_path_factory.mktemp("runs")
    config = config_for(scale_file, shards, output_dir, "unbroken")
    return config, train(config)


def contrastive_loss(model, preprocess, tokenizer, samples) -> float:
    """CLIP's loss over fixed batches of 32 training samples (shuffled once, seed 0)."""
    import torch.nn.functional as F
    from PIL import Image

    order = list(range(len(samples)))
    random.Random(0).shuffle(order)
    losses = []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(order), BATCH):
            batch = [samples[i] for i in order[start:start + BATCH]]
            images = torch.stack([preprocess(Image.open(io.BytesIO(jpeg)).convert("RGB")) for _, jpeg in batch])
            out = model(images, tokenizer([caption for caption, _ in batch]))
            logits = out["logit_scale"] * out["image_features"] @ out["text_features"].T
            labels = torch.arange(len(batch))
            losses.append(((F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2).item())
    return sum(losses) / len(losses)


def test_training_lowers_the_loss(unbroken, samples):
    from winnow.shared.models.clip import register_winnow_configs

    _, result = unbroken
    history = result.losses
    assert [r.step for r in history] == list(range(1, STEPS + 1))
    first, last = sum(r.loss for r in history[:4]) / 4, sum(r.loss for r in history[-4:]) / 4
    assert first > last + 0.2, [r.loss for r in history]

    register_winnow_configs()
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms("winnow-tiny-ViT", output_dict=True)
    tokenizer = open_clip.get_tokenizer("winnow-tiny-ViT")
    untrained = contrastive_loss(model, preprocess, tokenizer, samples)
    model.load_state_dict(torch.load(result.checkpoint, map_location="cpu", weights_only=True)["state_dict"])
    trained = contrastive_loss(model, preprocess, tokenizer, samples)
    assert trained < untrained - 0.3, (untrained, trained)


def test_run_records_its_outputs(unbroken, shards):
    config, result = unbroken
    run_dir = Path(config.output_dir) / "unbroken"
    assert result.checkpoint == run_dir / "checkpoints" / f"epoch_{CHECKPOINTS}.pt"
    assert latest_checkpoint(config.output_dir, "unbroken") == result.checkpoint
    assert (result.epochs, result.steps, result.samples_seen) == (CHECKPOINTS, STEPS, STEPS * BATCH)
    info = json.loads((run_dir / "info.json").read_text())
    assert info["checkpoint"] == str(result.checkpoint) and info["scale"] == "tiny24"
    assert info["train_data"] == f"{shards}/{{00000000..00000003}}.tar"
    assert (info["steps"], info["samples_seen"], info["epochs"]) == (STEPS, STEPS * BATCH, CHECKPOINTS)
    assert len(info["loss_history"]) == STEPS and info["final_loss"] == result.final_loss
    assert info["open_clip_args"][info["open_clip_args"].index("--train-num-samples") + 1] == str(
        STEPS_PER_CHECKPOINT * BATCH)
    # warmup: the learning rate climbs linearly to the peak over the first 10 steps, then decays
    lrs = [r["lr"] for r in info["loss_history"]]
    assert lrs[0] == pytest.approx(5e-4 / 10, abs=1e-6) and max(lrs) == pytest.approx(5e-4, abs=1e-6)
    assert lrs[-1] < 5e-5
    # DataComp's evaluate.py reads info.pkl
    datacomp = pickle.loads((run_dir / "info.pkl").read_bytes())
    assert datacomp["checkpoint"] == str(result.checkpoint) and datacomp["scale_config"]["model"] == "winnow-tiny-ViT"
    checkpoint = torch.load(result.checkpoint, map_location="cpu", weights_only=True)
    assert checkpoint["epoch"] == CHECKPOINTS
    assert {int(s["step"]) for s in checkpoint["optimizer"]["state"].values()} == {STEPS}


def test_finished_run_is_not_trained_again(unbroken):
    config, result = unbroken
    log = Path(config.output_dir) / "unbroken" / "out.log"
    before = (log.read_text().count("Train Epoch"), result.checkpoint.stat().st_mtime_ns)
    again = train(config)
    assert (log.read_text().count("Train Epoch"), again.checkpoint.stat().st_mtime_ns) == before
    assert (again.checkpoint, again.steps, again.samples_seen) == (result.checkpoint, result.steps, result.samples_seen)
    assert len(again.losses) == STEPS


def test_killed_run_resumes_from_its_checkpoint(unbroken, tmp_path, scale_file, shards):
    """SIGKILL after the first checkpoint, start again: the run ends where an unbroken one does.

    The weights are not compared: two unbroken runs with the same seed already differ, because
    open_clip's webdataset pipeline shuffles samples with webdataset's ``shuffle``, whose random
    generator is seeded from the time and pid, and because the augmentation's random state is
    re-seeded on resume rather than carried over. What is deterministic is compared instead: the
    step count, samples seen, the epoch and the learning rate at every step, the optimizer's step
    count in the final checkpoint.
    """
    reference_config, reference = unbroken
    command = [sys.executable, "-m", "winnow.services.trainer.train", "--scale", str(scale_file), "--data_dir", str(shards),
               "--output_dir", str(tmp_path), "--exp_name", "killed", "--num_checkpoints", str(CHECKPOINTS),
               "--workers", "0", "--seed", "0", "--device", "cpu", "--log_every_n_steps", "1",
               "--no_grad_checkpointing", "--save_frequency", "0", "--log_level", "WARNING"]
    checkpoints = tmp_path / "killed" / "checkpoints"
    with open(tmp_path / "first.log", "wb") as output:
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=output, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 240
            while not (checkpoints / "epoch_latest.pt").exists():
                assert process.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "no checkpoint within 240 s"
                time.sleep(0.05)
            process.send_signal(signal.SIGKILL)
        finally:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (checkpoints / f"epoch_{CHECKPOINTS}.pt").exists()
    killed_at = torch.load(checkpoints / "epoch_latest.pt", map_location="cpu", weights_only=True)["epoch"]
    assert 1 <= killed_at < CHECKPOINTS

    resumed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    run_log = (tmp_path / "killed" / "out.log").read_text()
    assert f"=> resuming checkpoint '{checkpoints / 'epoch_latest.pt'}' (epoch {killed_at})" in run_log

    info = json.loads((tmp_path / "killed" / "info.json").read_text())
    assert latest_checkpoint(tmp_path, "killed") == Path(info["checkpoint"]) == checkpoints / f"epoch_{CHECKPOINTS}.pt"
    assert (info["steps"], info["samples_seen"], info["epochs"]) == (reference.steps, reference.samples_seen,
                                                                     reference.epochs)
    history = info["loss_history"]
    assert [r["step"] for r in history] == [r.step for r in reference.losses]
    assert [(r["epoch"], r["lr"]) for r in history] == [(r.epoch, r.lr) for r in reference.losses]
    assert all(math.isfinite(r["loss"]) for r in history)

    final = torch.load(info["checkpoint"], map_location="cpu", weights_only=True)
    expected = torch.load(reference.checkpoint, map_location="cpu", weights_only=True)
    assert final["epoch"] == expected["epoch"] == CHECKPOINTS
    assert {int(s["step"]) for s in final["optimizer"]["state"].values()} == {STEPS}
    assert final["state_dict"].keys() == expected["state_dict"].keys()


def test_fresh_start_refuses_an_existing_run(unbroken):
    import dataclasses

    from winnow.services.trainer.train import TrainingError

    config, _ = unbroken
    with pytest.raises(TrainingError, match="refused to start"):
        train(dataclasses.replace(config, resume=None))
