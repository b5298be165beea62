"""Ingest straight from S3: a real S3 endpoint (moto's server on 127.0.0.1) holding a demo corpus.

What is compared is what a user gets: the pairs manifest from the bucket must be row for row
the one from the same corpus in a local folder, whether the bucket is listed by prefix or read
through its inventory, whether S3 throttles (503 SlowDown) or not, signed or anonymous.

Throttling is real HTTP, not a mock: a small proxy on loopback forwards every request verbatim to
moto and answers the first few object GETs itself with S3's 503 SlowDown error; it also records
each request, which is how the retries and the (absent) signatures are observed. No request
leaves 127.0.0.1.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pandas as pd
import pytest
from botocore.exceptions import ClientError

from biomedclip.config import S3Params
from biomedclip.demo.corpus import generate_corpus
from biomedclip.ingest.run import run_ingest
from biomedclip.storage import ObjectReadError

from .conftest import SLOWDOWN, FaultProxy, ingest_params, small_params

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

BUCKET = "oa-mirror"
PRIVATE = "oa-private"
PREFIX = "pmc/2026-11"
COLUMNS = ["pair_id", "pmcid", "caption", "image_sha256", "split"]
@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """~20 demo articles, and the pairs manifest ingesting them from the local folder gives."""
    root = tmp_path_factory.mktemp("s3-corpus")
    params = small_params(root / "raw", articles=20)
    generate_corpus(params)
    local = ingest_params(params.out, root / "local-ingest")
    report = run_ingest(local)
    pairs = pd.read_parquet(local.outputs.pairs)[COLUMNS]
    assert len(pairs) == report["pairs"]["total"] > 20
    return params.out, pairs


@pytest.fixture(scope="module")
def bucket(moto_url, corpus):
    """The corpus uploaded, key for key, under s3://oa-mirror/pmc/2026-11/ (public-read), and one
    article of it in the private bucket s3://oa-private/pmc/2026-11/."""
    folder, _ = corpus
    client = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET, ACL="public-read")
    client.create_bucket(Bucket=PRIVATE)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    first = min(p.relative_to(folder).parts[0] for p in files if p.parent.name.startswith("PMC"))

    def upload(path: Path) -> None:
        key = f"{PREFIX}/{path.relative_to(folder).as_posix()}"
        client.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes(), ACL="public-read")
        if path.parent.name == first:
            client.put_object(Bucket=PRIVATE, Key=key, Body=path.read_bytes())

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(upload, files))
    listed = sum(page.get("KeyCount", 0) for page in client.get_paginator("list_objects_v2")
                 .paginate(Bucket=BUCKET, Prefix=f"{PREFIX}/"))
    assert listed == len(files)
    return f"s3://{BUCKET}/{PREFIX}"


@pytest.fixture
def proxy(moto_url, request):
    """The first `request.param` object GETs (not listings) answered with 503 SlowDown."""
    fail = getattr(request, "param", 0)
    server = FaultProxy(moto_url, lambda number, key: (503, SLOWDOWN) if number <= fail else None)
    yield server
    server.close()


def ingest_s3(tmp_path: Path, source: str, listing: str = "prefix",
              **s3) -> tuple[pd.DataFrame, dict]:
    params = ingest_params(source, tmp_path / "out", listing=listing,
                           s3=S3Params(max_attempts=6, **s3))
    report = run_ingest(params)
    return pd.read_parquet(params.outputs.pairs), report


@pytest.mark.parametrize("listing", ["prefix", "inventory"])
def test_ingest_from_s3_gives_the_local_folders_pairs(bucket, corpus, moto_url, tmp_path, listing):
    _, local = corpus
    pairs, report = ingest_s3(tmp_path, bucket, listing, endpoint_url=moto_url)
    pd.testing.assert_frame_equal(pairs[COLUMNS], local)
    assert pairs.source_uri.str.startswith(f"{bucket}/PMC").all()  # provenance: the bucket
    assert report["articles"]["listed"] == 20
    assert report["pairs"]["total"] == len(local)


@pytest.mark.parametrize("proxy", [4], indirect=True)
def test_a_throttling_s3_is_retried_and_gives_the_same_pairs(bucket, corpus, proxy, tmp_path):
    _, local = corpus
    pairs, _ = ingest_s3(tmp_path, bucket, endpoint_url=proxy.url)
    pd.testing.assert_frame_equal(pairs[COLUMNS], local)
    refused = [s for s in proxy.seen if s.status == 503]
    assert len(refused) == 4 and all(s.method == "GET" for s in refused)
    for s in refused:  # each refused object was asked for again, and served
        later = proxy.seen[proxy.seen.index(s) + 1:]
        assert any(t.key == s.key and t.status == 200 for t in later), s.key
    assert all(s.signed for s in proxy.seen)


def test_unsigned_access_reads_a_public_bucket_anonymously(bucket, corpus, proxy, tmp_path):
    _, local = corpus
    pairs, _ = ingest_s3(tmp_path, bucket, endpoint_url=proxy.url, unsigned=True)
    pd.testing.assert_frame_equal(pairs[COLUMNS], local)
    assert proxy.seen and not any(s.signed for s in proxy.seen), "an unsigned request was signed"
    assert {s.status for s in proxy.seen} == {200}


def test_unsigned_access_to_a_private_bucket_is_refused(bucket, moto_url, tmp_path):
    """The other side of the test above: anonymous requests really are anonymous (moto enforces
    the bucket ACL), and the refusal surfaces as an error, not as an empty manifest."""
    with pytest.raises(ObjectReadError) as refused:
        ingest_s3(tmp_path, f"s3://{PRIVATE}/{PREFIX}", endpoint_url=moto_url, unsigned=True)
    assert isinstance(refused.value.__cause__, ClientError)
    assert refused.value.__cause__.response["Error"]["Code"] in ("AccessDenied", "403")
    assert str(refused.value).startswith(f"s3://{PRIVATE}/{PREFIX}/PMC")  # names the object
    _, report = ingest_s3(tmp_path / "signed", f"s3://{PRIVATE}/{PREFIX}", endpoint_url=moto_url)
    assert report["articles"]["listed"] == 1 and report["pairs"]["total"] > 0
