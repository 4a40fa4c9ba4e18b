"""Which errors mean "the dependency is down, wait" rather than "the shard is bad".

The chaos run found the case below: while SeaweedFS restarted, a shard's parquet read answered
HTTP 500 "InternalError", which s3fs turns into ``OSError(EREMOTEIO)`` with botocore's
``ClientError`` as its cause; it was taken for a corrupt shard and dead-lettered at once. The
errors here are built by botocore and translated by s3fs itself, as a read from the store raises them.
"""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError
from s3fs.errors import translate_boto_error

from winnow.shared.outages import is_outage


def _client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"{code} from the store"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")


@pytest.mark.parametrize("code, status", [("InternalError", 500), ("ServiceUnavailable", 503), ("SlowDown", 503)])
def test_an_object_stores_server_errors_are_outages(code, status):
    raised = translate_boto_error(_client_error(code, status))
    assert isinstance(raised, OSError)
    assert is_outage(raised)


@pytest.mark.parametrize("code, status", [("NoSuchKey", 404), ("AccessDenied", 403), ("InvalidRange", 416)])
def test_an_object_stores_client_errors_are_not(code, status):
    assert not is_outage(translate_boto_error(_client_error(code, status)))


def test_a_shard_that_is_not_there_is_still_a_shard_error_not_an_outage(tmp_path):
    """What ``read_table`` lets through as an outage is only what ``is_outage`` names: a missing or
    unparseable ledger stays ``ShardFormatError`` (dead-lettered at once, no waiting)."""
    from winnow.shared.shards import ShardFormatError, read_table

    (tmp_path / "broken.parquet").write_bytes(b"not a parquet file")
    for prefix in (tmp_path / "missing", tmp_path / "broken"):
        with pytest.raises(ShardFormatError):
            read_table(str(prefix))
