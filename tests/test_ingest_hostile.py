"""Ingest of hostile sources: every bad article, figure or package becomes a reject, never a crash.

Two sources are built in a temporary folder: an "opendata" mirror holding three good articles
copied from a small demo corpus beside hand-made hostile ones (XXE, entity bombs, malformed and
mis-encoded XML, lying or broken JSON, media names and hrefs that climb out of their folder,
empty, truncated and bomb images, symlinks out of the tree), and a "legacy" FTP mirror holding
the same good articles' packages beside hostile tarballs (absolute and `..` members, links,
devices, truncated and non-tar files, file-list paths out of the tree). Each is ingested once;
the tests then read the outputs. Hostile articles carry valid captions and images, so anything
the ingest wrongly accepts would show up as a pair.

A throw-away HTTP server on 127.0.0.1 is the target of the network-reaching entities: it records
any request, so "the parser never fetched anything" is observed, not assumed.
"""

from __future__ import annotations

import csv
import gzip
import http.server
import io
import json
import os
import shutil
import struct
import tarfile
import threading
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from biomedclip.demo.corpus import generate_corpus
from biomedclip.ingest.rejects import LEVEL_OF, Reason
from biomedclip.ingest.run import run_ingest

from .conftest import ingest_params, small_params

pytestmark = [pytest.mark.unit, pytest.mark.timeout(180)]
ALLOWED = {"CC BY", "CC0", "CC BY-SA", "CC BY-ND"}
# Noise that costs an article a pair or adds a reject (or, for several graphics, repeats a fig id).
REJECTED_NOISE = {"graphical_abstract", "no_figures", "no_caption", "duplicate_image",
                  "multiple_graphics"}
SECRET = "XXE-CANARY-7d1e0c55-do-not-leak"
BUCKET_URL = "s3://pmc-oa-opendata"
XLINK = 'xmlns:xlink="http://www.w3.org/1999/xlink"'


# --- building hostile inputs ------------------------------------------------------------------


def caption(topic: str) -> str:
    return f"Representative micrograph of the {topic} specimen stained with haematoxylin and eosin."


def jats(pmcid: str, figures: list[tuple[str, str, str]], *, prolog: str | None = None) -> str:
    """A minimal CC BY JATS article; figures are (fig id, caption markup, graphic href)."""
    figs = "".join(
        f'<fig id={quoteattr(fid)}><label>Figure {i}</label><caption><p>{text}</p></caption>'
        f'<graphic xlink:href={quoteattr(href)}/></fig>'
        for i, (fid, text, href) in enumerate(figures, start=1))
    head = '<?xml version="1.0" encoding="UTF-8"?>\n' if prolog is None else prolog
    return (f'{head}<article {XLINK} article-type="research-article"><front><article-meta>'
            f'<article-id pub-id-type="pmcid">{pmcid}</article-id>'
            f'<title-group><article-title>Hostile input {pmcid}</article-title></title-group>'
            '<permissions><license xlink:href="https://creativecommons.org/licenses/by/4.0/">'
            '<license-p>CC BY</license-p></license></permissions></article-meta></front>'
            f'<body><sec><title>Results</title>{figs}</sec></body></article>')


def picture(seed: int, fmt: str = "JPEG", size: tuple[int, int] = (120, 90)) -> bytes:
    """A small image no other article has (random pixels): never a duplicate of anything."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A valid little PNG whose header claims `width` x `height` pixels (a decompression bomb)."""
    data = bytearray(picture(7, "PNG", (64, 64)))
    ihdr = bytes(data[12:16]) + struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:24] = ihdr[4:12]
    data[29:33] = struct.pack(">I", zlib.crc32(ihdr))
    return bytes(data)


def metadata(prefix: str, media: list[str], **changes) -> dict:
    pmcid, _, version = prefix.partition(".")
    doc = {"pmcid": pmcid, "version": int(version), "pmid": None, "is_retracted": False,
           "license_code": "CC BY",
           "media_urls": [f"{BUCKET_URL}/{prefix}/{name}?md5=0" for name in media]}
    return {**doc, **changes}


def write_version(root: Path, prefix: str, *, xml: str | bytes | None,
                  meta: dict | bytes | None, media: dict[str, bytes | Path] | None = None) -> None:
    """One `PMC{id}.{v}/` folder; a Path in `media` becomes a symlink to it."""
    folder = root / prefix
    folder.mkdir(parents=True)
    if xml is not None:
        (folder / f"{prefix}.xml").write_bytes(xml.encode() if isinstance(xml, str) else xml)
    if meta is not None:
        (folder / f"{prefix}.json").write_bytes(
            meta if isinstance(meta, bytes) else json.dumps(meta).encode())
    for name, data in (media or {}).items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, Path):
            path.symlink_to(data)
        else:
            path.write_bytes(data)


def simple_article(root: Path, prefix: str, seed: int, *, xml: str | bytes | None = None,
                   meta: dict | bytes | None = None, **meta_changes) -> None:
    """A well-formed one-figure article, with whichever part the caller makes hostile."""
    pmcid = prefix.partition(".")[0]
    if xml is None:
        xml = jats(pmcid, [("f1", caption(f"seed {seed}"), "fig1")])
    write_version(root, prefix, xml=xml,
                  meta=meta if meta is not None else metadata(prefix, ["fig1.jpg"], **meta_changes),
                  media={"fig1.jpg": picture(seed)})


def tar_member(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE,
               linkname: str = "") -> tuple[tarfile.TarInfo, io.BytesIO | None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.mtime = kind, linkname, 0o644, 1_600_000_000
    if kind == tarfile.CHRTYPE:
        info.devmajor, info.devminor = 1, 3  # /dev/null
    if kind == tarfile.REGTYPE:
        info.size = len(data)
        return info, io.BytesIO(data)
    return info, None


def package(pmcid: str, seed: int, *extra: tuple[tarfile.TarInfo, io.BytesIO | None]) -> bytes:
    """A gzipped `oa_package` tarball with a valid article and image, then the `extra` members."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(*tar_member(f"{pmcid}/{pmcid}.nxml",
                                jats(pmcid, [("f1", caption(f"package {seed}"), "fig1")]).encode()))
        tar.addfile(*tar_member(f"{pmcid}/fig1.jpg", picture(seed)))
        for member in extra:
            tar.addfile(*member)
    return gzip.compress(buf.getvalue(), mtime=0)


def recompress_with_crc_of(original: bytes, altered: bytes) -> bytes:
    """`altered` gzipped, but carrying the CRC-32 of `original`: a gzip whose check must fail."""
    data = gzip.compress(altered, mtime=0)
    return data[:-8] + struct.pack("<II", zlib.crc32(original), len(altered) & 0xFFFFFFFF)


def snapshot(root: Path) -> set[Path]:
    found = set()
    for dirpath, dirnames, filenames in os.walk(root):
        found.update(Path(dirpath) / n for n in dirnames + filenames)
    return found


class Tripwire:
    """An HTTP server on loopback that records every request (the parser must send none)."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        requests = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                requests.append(self.path)
                body = b'<!ENTITY leak "fetched">'
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.timeout = 5
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


# --- the expected outcome of each hostile input ------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    pmcid: str
    reason: str
    detail: str  # a substring the reject's detail must contain (what a reader needs to know)
    fig_id: str = ""

    def param(self):
        return pytest.param(self, id=self.name)


P = "PMC9000{:04d}"  # opendata hostile PMCIDs
L = "PMC9100{:04d}"  # legacy hostile PMCIDs
IMAGES = P.format(90)  # one article whose figures are hostile one by one

OPENDATA_CASES = [
    Case("xxe_file_entity", P.format(1), "xml_entities", "xxe"),
    Case("xxe_http_entity", P.format(2), "xml_entities", "xxe"),
    Case("xxe_parameter_entity", P.format(3), "xml_entities", "remote"),
    Case("billion_laughs_referenced", P.format(4), "xml_entities", "lol"),
    Case("entity_bomb_declared", P.format(5), "xml_entities", "lol1"),
    Case("xml_not_well_formed", P.format(6), "xml_malformed", "not well-formed"),
    Case("xml_latin1_without_declaration", P.format(7), "xml_malformed", "encoding"),
    Case("xml_empty", P.format(8), "xml_malformed", "empty"),
    Case("xml_missing", P.format(9), "xml_missing", f"{P.format(9)}.1.xml"),
    Case("json_not_json", P.format(10), "metadata_invalid", f"{P.format(10)}.1.json"),
    Case("json_not_an_object", P.format(11), "metadata_invalid", "not a JSON object"),
    Case("json_describes_another_prefix", P.format(12), "metadata_invalid", "describes PMC11"),
    Case("json_missing", P.format(13), "metadata_invalid", f"no {P.format(13)}.1.json"),
    Case("json_media_urls_not_a_list", P.format(14), "metadata_invalid", "not a list"),
    Case("media_url_climbs_to_etc_passwd", P.format(15), "media_name_unsafe", "etc/passwd"),
    Case("media_url_relative_etc_passwd", P.format(16), "media_name_unsafe", "../../etc/passwd"),
    Case("media_url_nested_path", P.format(17), "media_name_unsafe", "sub/fig1.jpg"),
    Case("media_url_backslashes", P.format(18), "media_name_unsafe", "passwd"),
    Case("href_with_dotdot", IMAGES, "media_name_unsafe", "../", fig_id="f2"),
    Case("href_with_backslash_dotdot", IMAGES, "media_name_unsafe", "..", fig_id="f3"),
    Case("image_zero_bytes", IMAGES, "image_unreadable", "empty.jpg: empty file", fig_id="f4"),
    Case("image_truncated_jpeg", IMAGES, "image_unreadable", "cut.jpg", fig_id="f5"),
    Case("image_truncated_png", IMAGES, "image_unreadable", "cut-png.png", fig_id="f6"),
    Case("image_not_an_image", IMAGES, "image_unreadable", "text.jpg", fig_id="f7"),
    Case("image_decompression_bomb", IMAGES, "image_too_large", "bomb.png", fig_id="f8"),
]

LEGACY_CASES = [
    Case("member_absolute_path", L.format(1), "archive_unsafe", "abs-canary"),
    Case("member_dotdot_path", L.format(2), "archive_unsafe", "dotdot-canary"),
    Case("member_backslash_path", L.format(3), "archive_unsafe", "escapes the package"),
    Case("member_symlink", L.format(4), "archive_unsafe", "is a link"),
    Case("member_hard_link", L.format(5), "archive_unsafe", "is a link"),
    Case("member_char_device", L.format(6), "archive_unsafe", "device"),
    Case("member_fifo", L.format(7), "archive_unsafe", "FIFO"),
    Case("gzip_truncated_mid_stream", L.format(8), "archive_corrupt", f"{L.format(8)}.tar.gz"),
    Case("not_a_tar_at_all", L.format(9), "archive_corrupt", "ReadError"),
    Case("gzip_of_text_not_tar", L.format(10), "archive_corrupt", "ReadError"),
    Case("zero_byte_package", L.format(11), "archive_corrupt", f"{L.format(11)}.tar.gz"),
    Case("gzip_trailer_missing", L.format(12), "archive_corrupt", f"{L.format(12)}.tar.gz"),
    Case("gzip_crc_mismatch", L.format(13), "archive_corrupt", f"{L.format(13)}.tar.gz"),
    Case("file_list_path_climbs_out", L.format(14), "archive_unsafe", "../outside"),
    Case("file_list_path_absolute", L.format(15), "archive_unsafe", "/outside/"),
    Case("package_symlinked_out_of_tree", L.format(16), "archive_unsafe", "resolves outside"),
    Case("package_without_nxml", L.format(17), "xml_missing", "holds no .nxml"),
    Case("package_listed_but_absent", L.format(18), "xml_missing", "is missing"),
]


# --- the two hostile sources, ingested once --------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A small demo corpus in both layouts, and the three good articles to copy from it."""
    root = tmp_path_factory.mktemp("hostile-demo")
    params = small_params(root / "raw", articles=20, legacy_out=root / "legacy")
    truth = generate_corpus(params)
    good = [a for a in truth.truth
            if a["version"] == 1 and not a["retracted"] and a["license_code"] in ALLOWED
            and a["graphics"] and not REJECTED_NOISE & set(a["noise"])
            and all(g["caption"] is not None and g["condition"] == "ok" and g["duplicate_of"] is None
                    and not REJECTED_NOISE & set(g["noise"]) for g in a["graphics"])][:3]
    assert len(good) == 3, "the demo corpus no longer has three clean articles to copy"
    return params, good


@pytest.fixture(scope="module")
def tripwire():
    server = Tripwire()
    yield server
    server.close()


@dataclass
class Run:
    root: Path  # everything of this run: sources, outside files, outputs
    source: Path
    out: Path
    params: object
    report: dict
    pairs: pd.DataFrame
    rejects: pd.DataFrame
    before: set[Path]
    after: set[Path]
    canaries: list[Path]
    cwd: Path


def ingest_hostile(root: Path, source: Path, canaries: list[Path], **changes) -> Run:
    out = root / "out"
    params = ingest_params(source, out, workers=2, batch_size=4, **changes)
    cwd = root / "cwd" / "a" / "b"  # any relative write (`..` included) would land in `root`
    cwd.mkdir(parents=True)
    before = snapshot(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        report = run_ingest(params)
    return Run(root, source, out, params, report, pd.read_parquet(params.outputs.pairs),
               pd.read_parquet(params.outputs.rejects), before, snapshot(root), canaries, cwd)


@pytest.fixture(scope="module")
def opendata_run(demo, tripwire, tmp_path_factory) -> Run:
    demo_params, good = demo
    root = tmp_path_factory.mktemp("hostile-opendata")
    source, outside = root / "source", root / "outside"
    outside.mkdir()
    for article in good:
        prefix = f"{article['pmcid']}.1"
        shutil.copytree(demo_params.out / prefix, source / prefix)
    secret = outside / "secret.txt"
    secret.write_text(SECRET)
    ok = caption  # shorter to read below
    lol = '<!ENTITY lol "lol">' + "".join(
        f'<!ENTITY lol{i} "{("&lol;" if i == 1 else f"&lol{i - 1};") * 10}">' for i in range(1, 10))
    decl = '<?xml version="1.0" encoding="UTF-8"?>\n'

    def doctype(subset: str) -> str:
        return f"{decl}<!DOCTYPE article [{subset}]>\n"

    def xml(n: int, text: str, prolog: str) -> str:
        return jats(P.format(n), [("f1", text, "fig1")], prolog=prolog)

    hostile = {
        1: dict(xml=xml(1, f"{ok('xxe')} &xxe;",
                        doctype(f'<!ENTITY xxe SYSTEM "file://{secret}">'))),
        2: dict(xml=xml(2, f"{ok('xxe http')} &xxe;",
                        doctype(f'<!ENTITY xxe SYSTEM "{tripwire.url}/xxe">'))),
        3: dict(xml=xml(3, ok("parameter entity"),
                        doctype(f'<!ENTITY % remote SYSTEM "{tripwire.url}/pe.dtd"> %remote;'))),
        4: dict(xml=xml(4, f"{ok('bomb')} &lol9;", doctype(lol))),
        5: dict(xml=xml(5, f"{ok('declared bomb')} &lol1;", doctype(lol))),
        6: dict(xml=xml(6, ok("broken"), decl)[:-40]),
        7: dict(xml=xml(7, ok("café latin-1"), "").encode("latin-1")),
        8: dict(xml=b""),
        10: dict(meta=b'{"pmcid": "PMC90000010", "version": 1, '),
        11: dict(meta=b'["PMC90000010", 1]'),
        12: dict(meta=metadata(f"{good[0]['pmcid']}.1", ["fig1.jpg"])),
        14: dict(media_urls=f"{BUCKET_URL}/{P.format(14)}.1/fig1.jpg"),
        15: dict(media_urls=[f"{BUCKET_URL}/{P.format(15)}.1/../../etc/passwd"]),
        16: dict(media_urls=["../../etc/passwd"]),
        17: dict(media_urls=[f"{BUCKET_URL}/{P.format(17)}.1/sub/fig1.jpg"]),
        18: dict(media_urls=[f"{BUCKET_URL}/{P.format(18)}.1/..\\..\\etc\\passwd"]),
    }
    for n, parts in hostile.items():
        simple_article(source, f"{P.format(n)}.1", n, **parts)
    write_version(source, f"{P.format(9)}.1", xml=None,  # the JSON is there, the XML is not
                  meta=metadata(f"{P.format(9)}.1", ["fig1.jpg"]), media={"fig1.jpg": picture(9)})
    write_version(source, f"{P.format(13)}.1", xml=jats(P.format(13), [("f1", ok("13"), "fig1")]),
                  meta=None, media={"fig1.jpg": picture(13)})
    (source / f"{P.format(17)}.1" / "sub").mkdir()
    (source / f"{P.format(17)}.1" / "sub" / "fig1.jpg").write_bytes(picture(170))
    # An external DTD is never loaded (from a file or the network): the article is read as if
    # it were not there, its undefined entity reference dropped.
    evil_dtd = outside / "evil.dtd"
    evil_dtd.write_text(f'<!ENTITY leak "{SECRET}">')
    for n, url in ((19, f"file://{evil_dtd}"), (20, f"{tripwire.url}/jats.dtd")):
        simple_article(source, f"{P.format(n)}.1", n, xml=xml(
            n, f"{ok(f'external DTD {n}')} &leak;", f'{decl}<!DOCTYPE article SYSTEM "{url}">\n'))
    # One article, one hostile graphic per figure; f1 is fine and must survive.
    figures = [("f1", ok("fine"), "fine"), ("f2", ok("href dotdot"), f"../{good[0]['pmcid']}.1/fine"),
               ("f3", ok("backslash"), "..\\..\\secret"), ("f4", ok("zero"), "empty"),
               ("f5", ok("cut jpeg"), "cut"), ("f6", ok("cut png"), "cut-png"),
               ("f7", ok("text"), "text"), ("f8", ok("bomb"), "bomb")]
    jpeg, png = picture(901), picture(902, "PNG")
    media = {"fine.jpg": picture(900), "empty.jpg": b"", "cut.jpg": jpeg[: len(jpeg) // 2],
             "cut-png.png": png[: len(png) // 2], "text.jpg": b"this is not an image\n" * 20,
             "bomb.png": png_claiming(100_000, 100_000)}
    write_version(source, f"{IMAGES}.1", xml=jats(IMAGES, figures),
                  meta=metadata(f"{IMAGES}.1", sorted(media)), media=media)
    # A version folder that is a symlink to a valid article out of the tree is not read at all.
    simple_article(outside, f"{P.format(95)}.1", 95)
    (source / f"{P.format(95)}.1").symlink_to(outside / f"{P.format(95)}.1")
    return ingest_hostile(root, source, [])


@pytest.fixture(scope="module")
def legacy_run(demo, tmp_path_factory) -> Run:
    demo_params, good = demo
    root = tmp_path_factory.mktemp("hostile-legacy")
    source, outside = root / "source", root / "outside"
    outside.mkdir()
    with (demo_params.legacy_out / "oa_file_list.csv").open(newline="") as f:
        header, *demo_rows = list(csv.reader(f))
    good_ids = {a["pmcid"] for a in good}
    rows = [r for r in demo_rows if r[2] in good_ids]
    for row in rows:
        (source / row[0]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(demo_params.legacy_out / row[0], source / row[0])
    canaries = [root / "abs-canary.txt", root / "dotdot-canary.txt"]

    def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = ""):
        return tar_member(name, b"escaped\n", kind, link)

    ids = {n: L.format(n) for n in range(1, 19)}
    plain = {n: package(ids[n], n) for n in (8, 12, 13, 14, 15, 16)}
    tar_of_13 = gzip.decompress(plain[13])
    packages: dict[int, bytes] = {
        1: package(ids[1], 1, member(str(canaries[0]))),
        2: package(ids[2], 2, member(f"{ids[2]}/../../../../{canaries[1].name}")),
        3: package(ids[3], 3, member(f"{ids[3]}\\..\\..\\backslash.txt")),
        4: package(ids[4], 4, member(f"{ids[4]}/fig2.jpg", tarfile.SYMTYPE, "/etc/passwd")),
        5: package(ids[5], 5, member(f"{ids[5]}/fig2.jpg", tarfile.LNKTYPE, f"{ids[5]}/fig1.jpg")),
        6: package(ids[6], 6, member(f"{ids[6]}/null", tarfile.CHRTYPE)),
        7: package(ids[7], 7, member(f"{ids[7]}/pipe", tarfile.FIFOTYPE)),
        8: plain[8][: len(plain[8]) // 2],
        9: b"<html>this is not an archive at all</html>\n" * 30,
        10: gzip.compress(b"this is text, not a tarball\n" * 100),
        11: b"",
        12: plain[12][:-8],
        13: recompress_with_crc_of(tar_of_13, tar_of_13.replace(b"Representative", b"Fabricated!!!!")),
    }
    paths = {n: f"oa_package/{n:02d}/{ids[n]}.tar.gz" for n in ids}
    for n, data in packages.items():
        (source / paths[n]).parent.mkdir(parents=True, exist_ok=True)
        (source / paths[n]).write_bytes(data)
    for n in (14, 15, 16):  # valid packages outside the tree, reached three ways
        (outside / f"{ids[n]}.tar.gz").write_bytes(plain[n])
    paths[14] = f"../outside/{ids[14]}.tar.gz"
    paths[15] = str(outside / f"{ids[15]}.tar.gz")
    (source / paths[16]).parent.mkdir(parents=True, exist_ok=True)
    (source / paths[16]).symlink_to(outside / f"{ids[16]}.tar.gz")
    buf = io.BytesIO()  # a package holding an image and no article
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.addfile(*tar_member(f"{ids[17]}/fig1.jpg", picture(17)))
    (source / paths[17]).parent.mkdir(parents=True, exist_ok=True)
    (source / paths[17]).write_bytes(gzip.compress(buf.getvalue()))
    # paths[18] is listed and never written.
    rows += [[paths[n], f"Hostile J. 2024; {n}", ids[n], "2024-01-01 00:00:00", "", "CC BY"]
             for n in ids]
    with (source / "oa_file_list.csv").open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return ingest_hostile(root, source, canaries, layout="legacy")


@pytest.fixture(params=["opendata", "legacy"])
def run(request) -> Run:
    return request.getfixturevalue(f"{request.param}_run")


# --- the tests ---------------------------------------------------------------------------------


def rejects_of(run: Run, case: Case) -> pd.DataFrame:
    rows = run.rejects[run.rejects.pmcid == case.pmcid]
    return rows[rows.fig_id == case.fig_id] if case.fig_id else rows


def check_case(run: Run, case: Case) -> None:
    rows = rejects_of(run, case)
    assert list(rows.reason) == [case.reason], rows[["reason", "detail"]].to_dict("records")
    row = rows.iloc[0]
    assert case.detail in row.detail, row.detail
    assert row.level == LEVEL_OF[Reason(case.reason)]
    assert row.version == 1
    if case.fig_id:  # a figure-level reject: the rest of the article is still read
        assert case.fig_id not in set(run.pairs.fig_id[run.pairs.pmcid == case.pmcid])
    else:  # an article-level reject: nothing of the article reaches the manifest
        assert case.pmcid not in set(run.pairs.pmcid)


@pytest.mark.parametrize("case", [c.param() for c in OPENDATA_CASES])
def test_hostile_opendata_input_is_rejected_with_its_reason(opendata_run, case):
    check_case(opendata_run, case)


@pytest.mark.parametrize("case", [c.param() for c in LEGACY_CASES])
def test_hostile_legacy_package_is_rejected_with_its_reason(legacy_run, case):
    check_case(legacy_run, case)


@pytest.mark.parametrize("layout", ["opendata", "legacy"])
def test_only_hostile_inputs_are_rejected_and_only_sound_ones_kept(request, demo, layout):
    """The rejects table holds exactly the expected rows (no good article lost to a reject, no
    hostile input counted twice) and the manifest only the good articles, the external-DTD
    article and the one fine figure of the image article."""
    run = request.getfixturevalue(f"{layout}_run")
    extra = {IMAGES, P.format(19), P.format(20)} if layout == "opendata" else set()
    kept = {a["pmcid"] for a in demo[1]} | extra
    cases = OPENDATA_CASES if layout == "opendata" else LEGACY_CASES
    expected = Counter((c.pmcid, c.fig_id, c.reason) for c in cases)
    got = Counter((r.pmcid, r.fig_id, r.reason) for r in run.rejects.itertuples())
    assert got == expected
    assert set(run.rejects.pmcid) <= {c.pmcid for c in cases}
    assert set(run.pairs.pmcid) == kept
    assert (run.rejects.detail.str.strip().str.len() > 0).all()


def test_good_articles_still_yield_all_their_pairs(opendata_run, legacy_run, demo):
    _, good = demo
    expected = {(a["pmcid"], g["fig_id"]): g["caption"] for a in good for g in a["graphics"]}
    columns = ["pair_id", "pmcid", "fig_id", "caption", "image_sha256"]
    mine = {}
    for run in (opendata_run, legacy_run):
        pairs = run.pairs[run.pairs.pmcid.isin({a["pmcid"] for a in good})]
        assert len(pairs) == len(expected) > 0
        assert dict(zip(zip(pairs.pmcid, pairs.fig_id, strict=True), pairs.caption,
                        strict=True)) == expected
        mine[run.params.layout] = pairs[columns].reset_index(drop=True)
    pd.testing.assert_frame_equal(mine["opendata"], mine["legacy"])  # the same, whichever layout


def test_a_hostile_figure_does_not_cost_its_articles_good_figures(opendata_run):
    pairs = opendata_run.pairs[opendata_run.pairs.pmcid == IMAGES]
    assert list(pairs.fig_id) == ["f1"]
    assert pairs.source_uri.iloc[0].endswith(f"{IMAGES}.1/fine.jpg")


def test_an_external_dtd_is_never_loaded_and_the_article_is_still_read(opendata_run, tripwire):
    """The DTD's entity would put the canary into the caption; the HTTP one would be a request
    to the tripwire (libxml2 2.14 has no HTTP client, so today only the file DTD could leak)."""
    for n in (19, 20):
        pairs = opendata_run.pairs[opendata_run.pairs.pmcid == P.format(n)]
        assert list(pairs.caption) == [caption(f"external DTD {n}")]
    assert tripwire.requests == [], "the XML parser reached the network"


def test_entities_are_never_expanded_nor_their_targets_read(opendata_run, tripwire):
    assert tripwire.requests == [], "an external entity was fetched"
    out = opendata_run.out
    texts = [*opendata_run.pairs.caption, *opendata_run.rejects.detail,
             (out / "ingest.json").read_text()]
    assert not any(SECRET in t for t in texts)
    for path in out.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    assert not any("lollollol" in t for t in texts)


def test_a_version_folder_linked_out_of_the_tree_is_not_read(opendata_run):
    assert P.format(95) not in set(opendata_run.pairs.pmcid)
    outside = str(opendata_run.root / "outside")
    assert not opendata_run.pairs.source_uri.str.startswith(outside).any()


def test_nothing_is_written_outside_the_output_folder(run):
    new = run.after - run.before
    outside = sorted(str(p) for p in new if run.out not in p.parents and p != run.out)
    assert outside == [], "the ingest wrote outside its output folder"
    assert not any(run.cwd.iterdir()), "the ingest wrote into the working directory"
    for canary in run.canaries:
        assert not canary.exists()
        assert not list(run.root.rglob(canary.name))
    assert not list(run.root.rglob("backslash.txt"))
    assert {p.name for p in run.out.iterdir()} == {"pairs.parquet", "rejects.parquet", "panels.parquet",
                                                   "images", "ingest.json", "state"}


def test_the_report_counts_exactly_the_rows_of_the_tables(run):
    report, rejects = run.report, run.rejects
    counts = Counter(rejects.reason)
    assert report["rejects"]["by_reason"] == {r.value: counts.get(r.value, 0) for r in Reason}
    assert report["rejects"]["total"] == len(rejects)
    levels = Counter(rejects.level)
    assert report["rejects"]["by_level"] == {lv: levels.get(lv, 0)
                                             for lv in ("article", "corpus", "figure", "image", "panel")}
    assert report["pairs"]["total"] == len(run.pairs)
    written = json.loads((run.out / "ingest.json").read_text())
    assert written["rejects"] == report["rejects"] and written["pairs"] == report["pairs"]
    cases = OPENDATA_CASES if run.params.layout == "opendata" else LEGACY_CASES
    extra = {P.format(19), P.format(20)} if run.params.layout == "opendata" else set()
    hostile_articles = {c.pmcid for c in cases} | extra
    assert report["articles"]["listed"] == len(hostile_articles) + 3


# --- hostile inputs that take the whole run down (one corpus each, so the others still run) ---

# Hostile inputs that once took the whole run down (each in a corpus of its own): deeply nested
# JSON (RecursionError), a numeric license_code (AttributeError), a PMCID beyond 2**63
# (OverflowError in SQLite), and files symlinked out of the source tree (UnsafeKey).
CRASHERS = ("json_nested_too_deep", "json_license_code_not_a_string", "pmcid_beyond_int64",
            "json_symlinked_out_of_tree", "xml_symlinked_out_of_tree", "media_symlinked_out_of_tree")
# kind → (reasons acceptable for the hostile article's one reject, what its detail must name)
CRASH_EXPECTED = {
    "json_nested_too_deep": ({"metadata_invalid"}, f"{P.format(1)}.1.json"),
    "json_license_code_not_a_string": ({"metadata_invalid"}, f"{P.format(1)}.1.json"),
    "json_symlinked_out_of_tree": ({"metadata_invalid"}, f"{P.format(1)}.1.json"),
    "xml_symlinked_out_of_tree": ({"xml_missing", "xml_malformed"}, f"{P.format(1)}.1.xml"),
    "media_symlinked_out_of_tree": ({"media_name_unsafe", "media_missing"}, "fig1.jpg"),
}


@pytest.mark.parametrize("kind", CRASHERS)
def test_one_hostile_file_or_prefix_does_not_crash_the_run(demo, tmp_path, kind):
    """Each of these once took the whole run down: one good article beside one hostile one."""
    demo_params, good = demo
    source, outside = tmp_path / "source", tmp_path / "outside"
    outside.mkdir()
    prefix = f"{good[0]['pmcid']}.1"
    shutil.copytree(demo_params.out / prefix, source / prefix)
    hostile = f"{P.format(1)}.1"
    if kind == "json_nested_too_deep":
        simple_article(source, hostile, 1,
                       meta=b'{"pmcid": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    elif kind == "json_license_code_not_a_string":
        simple_article(source, hostile, 1, license_code=5)
    elif kind == "pmcid_beyond_int64":
        simple_article(source, "PMC99999999999999999999.1", 1)
    else:  # one file of an otherwise fine article is a symlink to a copy outside the tree
        simple_article(source, hostile, 1)
        name = {"json": f"{hostile}.json", "xml": f"{hostile}.xml", "media": "fig1.jpg"}[
            kind.partition("_")[0]]
        shutil.move(source / hostile / name, outside / name)
        (source / hostile / name).symlink_to(outside / name)
    params = ingest_params(source, tmp_path / "out")
    report = run_ingest(params)
    pairs = pd.read_parquet(params.outputs.pairs)
    rejects = pd.read_parquet(params.outputs.rejects)
    assert set(pairs.pmcid) == {good[0]["pmcid"]}
    assert len(pairs) == len(good[0]["graphics"]) == report["pairs"]["total"]
    if kind in CRASH_EXPECTED:
        reasons, named = CRASH_EXPECTED[kind]
        assert len(rejects) == 1 and rejects.reason.iloc[0] in reasons, rejects.to_dict("records")
        assert named in rejects.detail.iloc[0]
