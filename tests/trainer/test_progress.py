"""``winnow train``'s console: open_clip's log lines become a bar; its parameter dump only with --verbose."""

from __future__ import annotations

import io
import logging

import pytest

from winnow.services.trainer.progress import TrainConsole

# Lines as open_clip_train (3.x) logs them, through the root logger.
PARAMS = ["Params:", "  accum_freq: 1", "  batch_size: 64", "  lr: 0.0005"]
TRAIN = ("Train Epoch: {epoch} [ {seen}/128 ({pct}%)] Data (t): 0.012 Batch (t): 0.201, 318.4/s, 318.4/s/gpu "
         "LR: 0.000500 Logit Scale: 14.286 Contrastive_loss: {loss} ({loss})")


@pytest.fixture
def open_clip_handlers(tmp_path):
    """A console and an out.log handler on the root logger, as open_clip's setup_logging adds them."""
    root = logging.getLogger()
    stream = io.StringIO()
    console, logfile = logging.StreamHandler(stream), logging.FileHandler(tmp_path / "out.log")
    level = root.level
    root.setLevel(logging.INFO)
    root.addHandler(console)
    root.addHandler(logfile)
    yield stream, tmp_path / "out.log"
    root.removeHandler(console)
    root.removeHandler(logfile)
    logfile.close()
    root.setLevel(level)


@pytest.mark.parametrize("verbose", [False, True])
def test_training_lines_feed_the_bar_and_params_stay_in_out_log(open_clip_handlers, verbose):
    stream, out_log = open_clip_handlers
    console = TrainConsole(total_steps=4, samples_per_step=64, verbose=verbose, show=False)
    with console.attached():
        for line in PARAMS:
            logging.info(line)
        logging.info(TRAIN.format(epoch=0, seen=64, pct=50, loss="2.0794"))
        logging.info(TRAIN.format(epoch=1, seen=64, pct=50, loss="1.5000"))
        task = console.progress.tasks[0]
        assert task.completed == 3  # epoch 1, 64 of 128 samples: 192 samples of 64 per step
        assert task.fields["rate"] == pytest.approx(318.4) and task.fields["loss"] == pytest.approx(1.5)
        logging.info("Start epoch 2")
    shown = stream.getvalue()
    assert ("batch_size: 64" in shown) is verbose
    assert ("Train Epoch" in shown) is verbose
    assert "Start epoch 2" in shown
    assert "batch_size: 64" in out_log.read_text() and "Train Epoch" in out_log.read_text()
    assert console.progress.tasks[0].completed == 4
