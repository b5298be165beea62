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

import http.client
import http.server
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import pandas as pd
import pytest
from botocore.exceptions import ClientError

from biomedclip.config import S3Params
from biomedclip.demo import generate_corpus
from biomedclip.ingest.run import run_ingest

from .conftest import ingest_params, small_params

pytestmark = pytest.mark.timeout(180)

BUCKET = "oa-mirror"
PRIVATE = "oa-private"
PREFIX = "pmc/2026-11"
COLUMNS = ["pair_id", "pmcid", "caption", "image_sha256", "split"]
SLOWDOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
            b"<Message>Please reduce your request rate.</Message><RequestId>FLAKY0001</RequestId>"
            b"<HostId>proxy</HostId></Error>")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te",
              "trailer", "upgrade"}


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    status: int
    signed: bool  # carried an Authorization header or a presigned X-Amz-Signature


class FlakyProxy:
    """Forwards requests verbatim to `upstream`; the first `fail` GETs of object keys (not
    listings) are answered here with 503 SlowDown. Records every request it sees."""

    def __init__(self, upstream: str, fail: int = 0) -> None:
        target = urlsplit(upstream)
        self.host, self.port = target.hostname, target.port
        self.fail_left = fail
        self.lock = threading.Lock()
        self.seen: list[Seen] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as botocore's pool expects
            disable_nagle_algorithm = True  # headers and body go out in separate writes

            def do_GET(self) -> None:
                proxy.handle(self)

            do_HEAD = do_PUT = do_POST = do_DELETE = do_GET

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def handle(self, h: http.server.BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else None
        key = urlsplit(h.path).path.strip("/").partition("/")[2]  # "" for bucket listings
        with self.lock:
            fail = h.command == "GET" and bool(key) and self.fail_left > 0
            self.fail_left -= fail
        if fail:
            status, headers, payload = 503, [("Content-Type", "application/xml")], SLOWDOWN
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
            try:
                conn.request(h.command, h.path, body=body,
                             headers={k: v for k, v in h.headers.items()
                                      if k.lower() not in HOP_BY_HOP})
                response = conn.getresponse()
                status, payload = response.status, response.read()
                headers = [(k, v) for k, v in response.getheaders()
                           if k.lower() not in HOP_BY_HOP | {"content-length"}]
                if h.command == "HEAD":
                    headers.append(("Content-Length", response.getheader("Content-Length", "0")))
            finally:
                conn.close()
        signed = "Authorization" in h.headers or "X-Amz-Signature" in h.path
        with self.lock:
            self.seen.append(Seen(h.command, h.path, status, signed))
        h.send_response_only(status)
        for name, value in headers:
            h.send_header(name, value)
        if h.command != "HEAD":
            h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(payload)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


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
    server = FlakyProxy(moto_url, fail=getattr(request, "param", 0))
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
        assert any(t.path == s.path and t.status == 200 for t in later), s.path
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
    with pytest.raises(ClientError) as refused:
        ingest_s3(tmp_path, f"s3://{PRIVATE}/{PREFIX}", endpoint_url=moto_url, unsigned=True)
    assert refused.value.response["Error"]["Code"] in ("AccessDenied", "403")
    _, report = ingest_s3(tmp_path / "signed", f"s3://{PRIVATE}/{PREFIX}", endpoint_url=moto_url)
    assert report["articles"]["listed"] == 1 and report["pairs"]["total"] > 0
