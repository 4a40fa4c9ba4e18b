"""The curation stages give the same verdicts with their models in-process and served by Triton."""

from __future__ import annotations

import pyarrow as pa

from winnow.services.blur.stage import BlurStage
from winnow.services.dedup.stage import DedupOptions, DedupStage
from winnow.services.safety.stage import SafetyOptions, SafetyStage
from winnow.shared.models.provider import model_factory
from winnow.shared.shards import read_table
from tests.triton.served_models import REAL_MODELS


def _curate(refs, triton_url: str, registry_dir: str) -> pa.Table:
    model = lambda kind: model_factory(kind, "offline", triton_url)  # noqa: E731
    stages = [SafetyStage(model("text_toxicity"), model("image_nsfw"), SafetyOptions(0.5, 0.5)),
              DedupStage(model("near_duplicate"), DedupOptions(registry_dir=registry_dir)),
              BlurStage(model("face_detector"))]
    for stage in stages:
        refs = [stage.process(ref) for ref in refs]
        stage.teardown()
    return pa.concat_tables([read_table(ref.uri) for ref in refs], promote_options="permissive")


def test_in_process_and_triton_keep_the_same_samples(downloaded, curation_pool, triton_server, triton_client,
                                                     tmp_path):
    for spec in REAL_MODELS:
        triton_client.load_model(spec.name, timeout=240)
    _, refs = downloaded
    local = _curate(refs, "", str(tmp_path / "local-registry"))
    # The second run writes beside the first: give it its own job root.
    import shutil

    remote_root = tmp_path / "remote-job"
    shutil.copytree(refs[0].job_root, remote_root, ignore=shutil.ignore_patterns("safety", "dedup", "blur"))
    remote_refs = []
    for ref in refs:
        copy = type(ref)()
        copy.CopyFrom(ref)
        copy.job_root = str(remote_root)
        copy.uri = ref.uri.replace(ref.job_root, str(remote_root))
        remote_refs.append(copy)
    remote = _curate(remote_refs, triton_server.grpc_url, str(tmp_path / "remote-registry"))

    def verdicts(table):
        return {r["uid"]: (r["status"], r["reason"]) for r in table.to_pylist()}

    assert verdicts(remote) == verdicts(local)
    kept = {uid for uid, (status, _) in verdicts(local).items() if status == "success"}
    assert curation_pool["uid"]["toxic"] not in kept and curation_pool["uid"]["exact_copy"] not in kept
    by_uid = {r["uid"]: r for r in remote.to_pylist()}
    for row in local.to_pylist():
        twin = by_uid[row["uid"]]
        if row.get("toxicity_score") is not None:
            assert abs(row["toxicity_score"] - twin["toxicity_score"]) < 1e-4
        assert len(row.get("face_bboxes") or []) == len(twin.get("face_bboxes") or [])
