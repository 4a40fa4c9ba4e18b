"""``winnow report`` on a real curated job, opened in real headless Chromium (Debian's
``chromium``, driven by Playwright): what a person sees must match the job's ledgers."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from winnow.shared.subset import load_subset, uids_to_hex
from winnow.report.cli import build_report
from tests.report.conftest import winnow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
STAGES = ("downloader", "safety", "dedup", "blur", "embed")


def ledgers(job: Path, stage: str) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in sorted((job / stage).glob("*.parquet"))],
                            promote_options="permissive")


def expected_funnel(job: Path) -> dict[str, tuple[int, int]]:
    """(in, kept) per stage, counted from the ledgers themselves: a stage saw the rows it kept and
    the rows it dropped."""
    funnel = {}
    for stage in STAGES:
        table = ledgers(job, stage)
        kept = pc.sum(pc.equal(table["status"], "success")).as_py()
        seen = table.num_rows if stage == "downloader" else \
            kept + pc.sum(pc.fill_null(pc.equal(table["dropped_by"], stage), False)).as_py()
        funnel[stage] = (seen, kept)
    last = ledgers(job, "embed")
    candidates = pc.sum(pc.equal(last["status"], "success")).as_py()
    funnel["filter"] = (candidates, len(load_subset(str(job / "filter" / "my_filters.english_top30.npy"))))
    return funnel


def uid_dropped_by(job: Path, stage: str, reason: str) -> str:
    table = ledgers(job, "embed").to_pylist()
    return next(r["uid"] for r in table if r["dropped_by"] == stage and r["reason"] == reason)


@pytest.fixture(scope="module")
def report(curated_job, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("page") / "report.html"
    done = winnow("report", str(curated_job), "--out", str(out), "--cache_dir", str(out.parent / "thumbs"))
    assert done.returncode == 0, done.stderr
    assert "thumbnails" in done.stdout
    return out


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: bash scripts/setup.sh --test installs it")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield browser
        browser.close()


def test_the_report_in_chromium_shows_what_the_ledgers_say(report, curated_job, browser, artifacts_dir):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(report.as_uri())
    page.wait_for_selector("#plot-funnel .main-svg")

    # the funnel: every stage's numbers as the ledgers count them
    for stage, (entered, kept) in expected_funnel(curated_job).items():
        row = page.locator(f'#funnel-table tr[data-stage="{stage}"]')
        assert row.locator('[data-field="in"]').inner_text().replace(",", "") == str(entered), stage
        assert row.locator('[data-field="kept"]').inner_text().replace(",", "") == str(kept), stage

    # the filter's criteria as it wrote them; the counts add up to what it dropped
    criteria = page.locator('table.criteria[data-filter="my_filters:english_top30"] [data-field="removed"]')
    removed = [int(t.replace(",", "")) for t in criteria.all_inner_texts()]
    entered, kept = expected_funnel(curated_job)["filter"]
    assert removed and sum(removed) == entered - kept
    assert page.locator('table.criteria[data-filter="clip_score"]').count() == 1

    # thumbnails: every grid image decoded; dropped reasons of curation stages and kept have some
    widths = page.eval_on_selector_all(".thumb img", "els => els.map(e => e.complete ? e.naturalWidth : 0)")
    assert len(widths) >= 20 and all(w > 0 for w in widths), widths
    for outcome in ("safety: toxic_caption", "dedup: near_duplicate", "filter: too_few_words", "kept"):
        assert page.locator(f'section[data-outcome="{outcome}"] .thumb img').count() > 0, outcome
    assert page.locator('section[data-outcome="downloader: http_404"] .noimg').count() == 1
    caption = page.locator('section[data-outcome="safety: toxic_caption"] .thumb .val').first.inner_text()
    assert caption.startswith("toxicity")

    # charts drawn by plotly.js: funnel, reasons, criteria, score histograms, downloads
    for plot in ("funnel", "reasons", "criteria-0", "hist-toxicity_score", "hist-nsfw_score",
                 "hist-duplicate_similarity", "hist-clip_b32_similarity_score", "downloads", "domains"):
        assert page.locator(f"#plot-{plot} .main-svg").count() > 0, plot
    assert "threshold 0.5" in page.locator("#plot-hist-toxicity_score").inner_text()
    assert "of candidates at or above" in page.locator("#plot-hist-clip_b32_similarity_score").inner_text()

    # why is this sample gone? answered in the page
    lookups = {uid_dropped_by(curated_job, "safety", "toxic_caption"): "dropped by safety: toxic_caption",
               uid_dropped_by(curated_job, "dedup", "near_duplicate"): "dropped by dedup: near_duplicate",
               uids_to_hex(load_subset(str(curated_job / "filter" / "my_filters.english_top30.npy")))[0]: "kept"}
    filtered = pq.read_table(curated_job / "filter" / "my_filters.english_top30.dropped.parquet").to_pylist()[0]
    lookups[filtered["uid"]] = f"dropped by the filter: {filtered['reason']}"
    for uid, verdict in lookups.items():
        page.fill("#uid-input", uid)
        page.click("#uid-button")
        assert page.locator("#uid-verdict").inner_text().startswith(verdict), uid
    page.fill("#uid-input", "0" * 32)
    page.click("#uid-button")
    assert "not in this job" in page.locator("#uid-result").inner_text()

    assert errors == []
    assert all(url.startswith(("file:", "data:")) for url in requests), "the page fetched something from outside"
    page.screenshot(path=str(artifacts_dir / "report.png"), full_page=True)
    page.close()


def test_the_report_samples_a_bounded_number_of_rows(curated_job, tmp_path):
    out = tmp_path / "small.html"
    summary = build_report(str(curated_job), str(out), per_reason=2, max_shards=1, cache_dir=str(tmp_path / "c"))
    assert summary["thumbnails"] <= 2 * summary["outcomes"]
    page = out.read_text()
    assert page.count('class="thumb"') <= 2 * summary["outcomes"]
    assert "drawn from 1 shards" in page


def test_report_of_something_that_is_not_a_job_says_so(tmp_path):
    done = winnow("report", str(tmp_path), "--out", str(tmp_path / "r.html"))
    assert done.returncode == 2
    assert "is not a winnow job" in " ".join(done.stderr.split())
    assert not (tmp_path / "r.html").exists()


@pytest.mark.s3
def test_the_report_reads_an_s3_job(curated_job, s3_server, s3_bucket, tmp_path, monkeypatch):
    import fsspec

    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    fs = fsspec.filesystem("s3")
    remote = f"{s3_bucket}/job"
    fs.put(str(curated_job), remote.removeprefix("s3://"), recursive=True)
    # the manifest names the local root; the report reads the files where they are now
    out = f"{s3_bucket}/report.html"
    summary = build_report(remote, out, cache_dir=str(tmp_path / "c"))
    page = fs.cat_file(out.removeprefix("s3://")).decode()
    funnel = expected_funnel(curated_job)
    assert summary["samples"] == funnel["downloader"][0]
    assert f'<tr data-stage="safety"><td>safety</td><td>5</td><td data-field="in">{funnel["safety"][0]}</td>' in page
    assert summary["thumbnails"] > 0


def test_uid_keys_tell_apart_uids_that_share_a_half():
    from winnow.shared.subset import uids_from_hex
    from winnow.report.collect import uid_key

    uids = [f"{i:032x}" for i in range(5000)] + [f"{i:016x}{0:016x}" for i in range(1, 5000)]
    assert len(set(uid_key(uids_from_hex(uids)).tolist())) == len(uids)
