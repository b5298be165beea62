"""The retrain's building blocks, each on real files: the PMC sync, the git lineage commit, the
workspace lock and the retrain params.

- Sync: a demo PMC corpus in a folder (and once in a real S3 endpoint, moto's server on
  127.0.0.1) is mirrored into a target folder; the source then changes the way PMC does (a new
  version, a retraction, a withdrawn version) and what users rely on is checked: the target ends
  byte-identical to the source's article versions, only what changed is fetched, nothing is
  half-applied when a download fails or the removal guard trips, and whatever else lives in the
  target is left alone.
- `commit_on_branch` runs in a real `git init` repository, `biomedclip.locks.held` against a real second
  process that is then killed with SIGKILL.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from biomedclip.config import ConfigError, S3Params
from biomedclip.demo.corpus import generate_corpus
from biomedclip.git import commit_on_branch
from biomedclip.ingest.sources import VERSION_PREFIX
from biomedclip.locks import Busy, held
from biomedclip.params import Params, load_params, parse_params
from biomedclip.retrain import sync as sync_module
from biomedclip.retrain.sync import RemovalRefused, SyncReport, sync
from biomedclip.storage import LocalStore, open_store

from .conftest import REPO, small_params

pytestmark = pytest.mark.timeout(120)

ARTICLES = 12
EXTRA_FIRST_PMCID = 12_000_000  # the "later" articles: PMCIDs above the first corpus's


# --- helpers -------------------------------------------------------------------------------


def versions(folder: Path) -> list[str]:
    """The article-version prefixes (`PMC{id}.{v}`) directly in `folder`, sorted."""
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and VERSION_PREFIX.match(p.name))


def tree(folder: Path, *, only_versions: bool = False) -> dict[str, str]:
    """Every file under `folder` (relative path → MD5 of its bytes); `only_versions` keeps
    the files of article-version folders only (what the sync mirrors)."""
    if not folder.exists():
        return {}
    files = {}
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        rel = path.relative_to(folder)
        in_a_version = len(rel.parts) > 1 and VERSION_PREFIX.match(rel.parts[0])
        if only_versions and not in_a_version:
            continue
        files[rel.as_posix()] = hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
    return files


def files_of(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


class CountingStore(LocalStore):
    """A LocalStore that records every key read through `get` (listing is not counted)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.gets: list[str] = []

    def get(self, key: str) -> bytes:
        self.gets.append(key)
        return super().get(key)


class FailingStore(LocalStore):
    """Fault injection: `get` of one key raises OSError, as a dropped connection or a failing
    disk would. A real read of a local file cannot be made to fail here (root ignores file
    permissions), so the failure is injected at the store's one read method."""

    def __init__(self, root: Path, fail_key: str) -> None:
        super().__init__(root)
        self.fail_key = fail_key
        self.failed = 0

    def get(self, key: str) -> bytes:
        if key == self.fail_key:
            self.failed += 1
            raise OSError(f"injected read error on {key}")
        return super().get(key)


def do_sync(source: Path, target: Path, state: Path, *, store=None, **options) -> SyncReport:
    """One sync with the retrain's defaults, few workers (the test machine has 2 cores)."""
    return sync(store or open_store(str(source), S3Params()), target, state, workers=2, **options)


def add_version(source: Path, prefix: str, new_prefix: str) -> None:
    """A new version of an article: `prefix`'s folder copied as `new_prefix`, its own files
    (`{prefix}.json`, `.xml`, `.txt`) renamed and the JSON's `version` updated."""
    folder = source / new_prefix
    shutil.copytree(source / prefix, folder)
    for path in list(folder.iterdir()):
        if path.name.startswith(f"{prefix}."):
            path.rename(folder / path.name.replace(prefix, new_prefix, 1))
    meta_path = folder / f"{new_prefix}.json"
    meta = json.loads(meta_path.read_text())
    meta["version"] = int(new_prefix.rpartition(".")[2])
    meta_path.write_text(json.dumps(meta, indent=2))


def parseable_with_media(source: Path) -> tuple[str, Path]:
    """A version whose JSON is a readable object and which has at least one media file."""
    for prefix in versions(source):
        try:
            meta = json.loads((source / prefix / f"{prefix}.json").read_text())
        except (ValueError, OSError):
            continue  # the demo corpus carries some deliberately broken JSON
        media = [p for p in (source / prefix).iterdir()
                 if p.suffix.lower() in (".jpg", ".png", ".gif", ".tif")]
        if isinstance(meta, dict) and media:
            return prefix, sorted(media)[0]
    raise AssertionError("no version with a readable JSON and media in the demo corpus")


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> tuple[Path, Path]:
    """A 12-article demo corpus and 3 later articles (PMCIDs from 12,000,000), generated once."""
    root = tmp_path_factory.mktemp("retrain-corpora")
    generate_corpus(small_params(root / "base", articles=ARTICLES))
    generate_corpus(small_params(root / "extra", articles=3, first_pmcid=EXTRA_FIRST_PMCID))
    assert len(versions(root / "base")) == ARTICLES and len(versions(root / "extra")) == 3
    return root / "base", root / "extra"


@pytest.fixture
def source(corpora, tmp_path) -> Path:
    """This test's own copy of the 12-article corpus (with its metadata/ and inventory-reports/)."""
    folder = tmp_path / "source"
    shutil.copytree(corpora[0], folder)
    return folder


@pytest.fixture
def extra(corpora) -> Path:
    return corpora[1]


@pytest.fixture
def target(tmp_path) -> Path:
    return tmp_path / "raw"


@pytest.fixture
def state(tmp_path) -> Path:
    return tmp_path / "sync-state"


# --- sync ----------------------------------------------------------------------------------


@pytest.mark.unit
def test_first_sync_mirrors_every_version_and_later_syncs_fetch_nothing(source, target, state):
    """The first sync copies every version byte for byte (and nothing else: not metadata/, not
    inventory-reports/). A second sync reads no object at all (the listing tags are remembered).
    With the sync state lost, a third still fetches nothing: the local files are recognised by
    content; and the tags it re-learned spare the next sync any read again."""
    everything = versions(source)
    expected = tree(source, only_versions=True)
    assert len(everything) == ARTICLES and expected

    first = do_sync(source, target, state)
    assert tree(target) == expected
    assert first.new == everything
    assert (first.changed, first.removed, first.unchanged, first.listed) == ([], [], 0, ARTICLES)
    assert first.fetched_objects == len(expected)
    assert first.fetched_bytes == sum(p.stat().st_size for p in files_of(target))
    assert first.anything
    assert not (state / "staging").exists(), "the staging folder was left behind"

    store = CountingStore(source)
    second = do_sync(source, target, state, store=store)
    assert (second.fetched_objects, second.fetched_bytes, second.deleted_objects) == (0, 0, 0)
    assert (second.unchanged, second.new, second.changed, second.removed) == (ARTICLES, [], [], [])
    assert not second.anything
    assert store.gets == [], "an unchanged source was read again"
    assert tree(target) == expected

    shutil.rmtree(state)
    store = CountingStore(source)
    third = do_sync(source, target, state, store=store)
    assert (third.fetched_objects, third.unchanged, third.new) == (0, ARTICLES, [])
    assert not third.anything
    assert store.gets, "without a state the local files must be compared by content"
    assert tree(target) == expected

    store = CountingStore(source)
    fourth = do_sync(source, target, state, store=store)
    assert (fourth.fetched_objects, fourth.unchanged) == (0, ARTICLES)
    assert store.gets == [], "the tags confirmed by content were not remembered"


@pytest.mark.unit
def test_a_new_version_is_the_only_thing_fetched(source, target, state):
    """PMC publishes version 2 of an article: the next sync fetches exactly its files."""
    do_sync(source, target, state)
    old = versions(source)[0]
    new = f"{old.rpartition('.')[0]}.2"
    add_version(source, old, new)

    report = do_sync(source, target, state)
    assert report.new == [new]
    assert (report.changed, report.removed, report.retracted) == ([], [], [])
    assert report.fetched_objects == len(files_of(source / new))
    assert report.fetched_bytes == sum(p.stat().st_size for p in files_of(source / new))
    assert (report.listed, report.unchanged) == (ARTICLES + 1, ARTICLES)
    assert tree(target) == tree(source, only_versions=True)
    assert (target / old).is_dir(), "the earlier version must stay"


@pytest.mark.unit
def test_a_retracted_version_is_fetched_again_and_its_dropped_media_deleted(source, target, state):
    """An existing version's JSON now says `is_retracted: true` and one of its figures is gone
    from the source: the version is reported changed and retracted, only the JSON is fetched,
    and the figure is deleted locally."""
    do_sync(source, target, state)
    prefix, media = parseable_with_media(source)
    json_path = source / prefix / f"{prefix}.json"
    meta = json.loads(json_path.read_text())
    meta["is_retracted"] = True
    if isinstance(meta.get("media_urls"), list):
        meta["media_urls"] = [u for u in meta["media_urls"] if f"/{media.name}?" not in u]
    json_path.write_text(json.dumps(meta, indent=2))
    media.unlink()

    report = do_sync(source, target, state)
    assert report.changed == [prefix]
    assert report.retracted == [prefix]
    assert (report.new, report.removed) == ([], [])
    assert report.fetched_objects == 1
    assert report.deleted_objects == 1
    assert report.unchanged == ARTICLES - 1
    assert not (target / prefix / media.name).exists(), "the dropped figure is still there"
    assert json.loads((target / prefix / f"{prefix}.json").read_text())["is_retracted"] is True
    assert tree(target) == tree(source, only_versions=True)


@pytest.mark.unit
def test_a_withdrawn_version_is_removed_unless_the_guard_refuses(source, target, state, extra):
    """A version gone from the source is removed locally. With `max_removed_fraction=0` the same
    sync is refused, and nothing at all happens: the withdrawn version stays, a version new in
    the same listing is not applied, the target tree is identical; the next, permissive sync
    then does both."""
    do_sync(source, target, state)
    gone = versions(source)[3]
    shutil.rmtree(source / gone)
    added = versions(extra)[0]
    shutil.copytree(extra / added, source / added)
    before = tree(target)

    with pytest.raises(RemovalRefused, match=gone):
        do_sync(source, target, state, max_removed_fraction=0)
    assert tree(target) == before, "a refused sync changed the target"
    assert not (state / "staging").exists(), "the refused sync's downloads were left behind"

    gone_files = len(files_of(target / gone))
    report = do_sync(source, target, state, max_removed_fraction=0.5)
    assert report.removed == [gone]
    assert report.new == [added]
    assert report.fetched_objects == len(files_of(source / added)), "the refused sync's state was kept"
    assert report.deleted_objects == gone_files
    assert not (target / gone).exists()
    assert tree(target) == tree(source, only_versions=True)


@pytest.mark.unit
def test_the_default_guard_refuses_to_empty_the_corpus_from_an_empty_source(source, target, state,
                                                                             tmp_path):
    """A mistyped source (an empty folder) must not wipe the mirrored corpus."""
    do_sync(source, target, state)
    before = tree(target)
    empty = tmp_path / "empty-source"
    empty.mkdir()
    with pytest.raises(RemovalRefused):
        do_sync(empty, target, state)
    assert tree(target) == before


@pytest.mark.unit
def test_a_failed_download_leaves_the_target_untouched(source, target, state, extra):
    """Three new articles and one changed version; reading one file of the second new article
    fails. The sync raises, and none of it is applied (not even the versions whose downloads
    succeeded); a normal sync afterwards applies everything."""
    do_sync(source, target, state)
    new = versions(extra)
    for prefix in new:
        shutil.copytree(extra / prefix, source / prefix)
    changed = versions(source)[0]
    (source / changed / f"{changed}.txt").write_text("a corrected full text\n")
    before = tree(target)
    fail_key = f"{new[1]}/{new[1]}.xml"
    assert (source / fail_key).is_file()

    store = FailingStore(source, fail_key)
    with pytest.raises(OSError, match="injected"):
        do_sync(source, target, state, store=store)
    assert store.failed == 1
    assert tree(target) == before, "a failed sync changed the target"
    assert not any((target / prefix).exists() for prefix in new)
    assert not (state / "staging").exists()

    report = do_sync(source, target, state)
    assert report.new == new
    assert report.changed == [changed]
    assert report.fetched_objects == sum(len(files_of(source / p)) for p in new) + 1
    assert tree(target) == tree(source, only_versions=True)


@pytest.mark.unit
def test_the_inventory_listing_mirrors_the_same_versions(source, target, state, tmp_path):
    """`retrain.listing: inventory` (PMC's daily S3 inventory, which the demo corpus also
    writes) finds the same versions as listing the prefixes, and mirrors the same files."""
    report = do_sync(source, target, state, listing="inventory")
    assert report.new == versions(source)
    assert tree(target) == tree(source, only_versions=True)
    again = do_sync(source, target, state, listing="prefix")
    assert (again.fetched_objects, again.unchanged) == (0, ARTICLES)


@pytest.mark.unit
def test_content_that_is_not_an_article_version_is_left_alone(source, target, state):
    """The target may hold other things (a README, an inventory copy, a folder named like a
    PMCID but without a version): syncs, removals included, never touch them."""
    others = {
        "README.md": b"the raw corpus, mirrored from PMC\n",
        "inventory-reports/pmc-oa-opendata/metadata/2026-11-01/manifest.json": b"{}",
        "metadata/PMC1.1.json": b'{"pmcid": "PMC1"}',
        "PMC11000002/notes.txt": b"not a version folder\n",
        "PMC5.x/notes.txt": b"not a version folder either\n",
    }
    for rel, data in others.items():
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        (target / rel).write_bytes(data)

    do_sync(source, target, state)
    gone = versions(source)[0]
    shutil.rmtree(source / gone)
    report = do_sync(source, target, state, max_removed_fraction=0.5)
    assert report.removed == [gone]

    for rel, data in others.items():
        assert (target / rel).read_bytes() == data, rel
    mirrored = {k: v for k, v in tree(target).items() if k not in others}
    assert mirrored == tree(source, only_versions=True)


# --- git lineage commit --------------------------------------------------------------------


@pytest.fixture
def repo(tmp_path, monkeypatch) -> Path:
    """A git repository on `main` with data.dvc, dvc.lock, metrics/ and an unrelated file;
    git identity from the environment, no user or system git config."""
    for name, value in {"GIT_AUTHOR_NAME": "Retrain Test", "GIT_AUTHOR_EMAIL": "retrain@example.org",
                        "GIT_COMMITTER_NAME": "Retrain Test", "GIT_COMMITTER_EMAIL": "retrain@example.org",
                        "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}.items():
        monkeypatch.setenv(name, value)
    folder = tmp_path / "repo"
    folder.mkdir()
    git(folder, "init", "--quiet", "--initial-branch=main")
    (folder / "data.dvc").write_text("outs:\n- md5: v1.dir\n  path: raw\n")
    (folder / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    (folder / "metrics").mkdir()
    (folder / "metrics" / "evaluate.json").write_text('{"recall": 0.1}\n')
    (folder / "train.py").write_text("print('train')\n")
    (folder / ".gitignore").write_text("*.tmp\n")
    git(folder, "add", ".")
    git(folder, "commit", "--quiet", "-m", "initial")
    return folder


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


def snapshot(repo: Path) -> dict[str, str]:
    """What a user sees of the checkout: HEAD, the branch, the index and the working tree."""
    return {
        "head": git(repo, "rev-parse", "HEAD"),
        "branch": git(repo, "symbolic-ref", "--short", "HEAD"),
        "staged": git(repo, "diff", "--cached", "--name-status"),
        "status": git(repo, "status", "--porcelain", "--ignored"),
        "files": json.dumps(tree(repo / "metrics") | {p.name: p.read_text() for p in repo.iterdir()
                                                      if p.is_file()}, sort_keys=True),
    }


@pytest.mark.integration
def test_commit_on_branch_commits_the_data_version_without_touching_the_checkout(repo):
    """A new branch is created from HEAD with the working-tree content of the paths (ignored
    files left out, other files as in HEAD); HEAD, the branch, the index and the working tree
    stay as they were. The same content again gives the same commit; a deleted path is removed
    in the next commit."""
    paths = ["data.dvc", "dvc.lock", "metrics"]
    head = git(repo, "rev-parse", "HEAD")
    (repo / "data.dvc").write_text("outs:\n- md5: v2.dir\n  path: raw\n")
    (repo / "metrics" / "register.json").write_text('{"version": 2}\n')
    (repo / "metrics" / "scratch.tmp").write_text("ignored\n")
    (repo / "train.py").write_text("print('edited, not committed')\n")
    before = snapshot(repo)
    assert before["staged"] == ""

    first = commit_on_branch("retrain", paths, "data version 2", cwd=repo)
    assert snapshot(repo) == before, "the checkout changed"
    assert git(repo, "rev-parse", "refs/heads/retrain") == first
    assert git(repo, "rev-parse", f"{first}^") == head
    assert git(repo, "log", "-1", "--format=%B", first) == "data version 2"
    assert git(repo, "show", f"{first}:data.dvc") == "outs:\n- md5: v2.dir\n  path: raw"
    assert git(repo, "show", f"{first}:metrics/register.json") == '{"version": 2}'
    assert git(repo, "show", f"{first}:train.py") == "print('train')", "a path not asked for was committed"
    listed = git(repo, "ls-tree", "-r", "--name-only", first).splitlines()
    assert "metrics/scratch.tmp" not in listed and "dvc.lock" in listed

    again = commit_on_branch("retrain", paths, "data version 2 again", cwd=repo)
    assert again == first
    assert git(repo, "rev-parse", "refs/heads/retrain") == first

    (repo / "dvc.lock").unlink()
    before = snapshot(repo)
    third = commit_on_branch("retrain", paths, "dvc.lock removed", cwd=repo)
    assert third != first and git(repo, "rev-parse", f"{third}^") == first
    assert "dvc.lock" not in git(repo, "ls-tree", "-r", "--name-only", third).splitlines()
    assert git(repo, "rev-parse", "refs/heads/retrain") == third
    assert snapshot(repo) == before


@pytest.mark.integration
def test_commit_on_the_checked_out_branch_moves_head_and_leaves_the_paths_clean(repo):
    """Committing on the branch that is checked out moves HEAD to the new commit, and `git
    status` shows the committed paths clean (the index follows); other edits stay pending."""
    paths = ["data.dvc", "dvc.lock", "metrics", "registry"]  # registry/ exists nowhere
    head = git(repo, "rev-parse", "HEAD")
    (repo / "data.dvc").write_text("outs:\n- md5: v3.dir\n  path: raw\n")
    (repo / "metrics" / "register.json").write_text('{"version": 3}\n')
    (repo / "dvc.lock").unlink()
    (repo / "train.py").write_text("print('edited, not committed')\n")

    commit = commit_on_branch("main", paths, "data version 3", cwd=repo)
    assert commit != head
    assert git(repo, "rev-parse", "HEAD") == commit
    assert git(repo, "symbolic-ref", "--short", "HEAD") == "main"
    assert git(repo, "rev-parse", f"{commit}^") == head
    assert git(repo, "status", "--porcelain", "--", *paths) == ""
    assert git(repo, "status", "--porcelain") == "M train.py"
    assert git(repo, "show", "HEAD:train.py") == "print('train')"


@pytest.mark.integration
def test_a_new_branch_exists_even_when_there_is_nothing_new_to_commit(repo):
    """The first lineage commit with the paths as they are in HEAD: the returned commit is
    HEAD, and the branch the retrain reports (`branch`, `commit`) must then exist there."""
    head = git(repo, "rev-parse", "HEAD")
    commit = commit_on_branch("retrain", ["data.dvc", "dvc.lock", "metrics"], "unchanged", cwd=repo)
    assert commit == head
    listed = subprocess.run(["git", "rev-parse", "--verify", "--quiet", "refs/heads/retrain"],
                            cwd=repo, capture_output=True, text=True)
    assert listed.returncode == 0, "commit_on_branch returned a commit, but branch retrain does not exist"
    assert listed.stdout.strip() == head


# --- workspace lock ------------------------------------------------------------------------


HOLDER = """
import sys, time
from pathlib import Path
from biomedclip.locks import held
with held(Path(sys.argv[1]), what="the workspace", wait=False, timeout_s=0):
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.mark.integration
def test_the_lock_is_exclusive_names_its_holder_and_dies_with_it(tmp_path):
    """While another process holds the lock, acquiring fails at once (wait=False) or after the
    timeout (wait=True), naming the holder's pid; once that process is killed with SIGKILL, the
    OS releases the lock and acquiring succeeds."""
    lock = tmp_path / ".retrain.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock)], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([holder.stdout], [], [], 60)
        assert ready, "the holder process did not take the lock within 60 s"
        line = holder.stdout.readline().strip()
        assert line == "held", f"holder said {line!r}: {holder.stderr.read() if holder.poll() is not None else ''}"

        with pytest.raises(Busy, match=rf"\bpid {holder.pid}\b"), \
                held(lock, what="the workspace", wait=False, timeout_s=60):
            pass
        start = time.monotonic()
        with pytest.raises(Busy, match=rf"\bpid {holder.pid}\b"), \
                held(lock, what="the workspace", wait=True, timeout_s=0.5):
            pass
        waited = time.monotonic() - start
        assert 0.4 <= waited < 10, f"waited {waited:.2f}s for a 0.5 s timeout"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        holder.stdout.close()
        holder.stderr.close()

    entered = False
    with held(lock, what="the workspace", wait=False, timeout_s=0):
        entered = True
        assert f"pid {os.getpid()} " in lock.with_name(lock.name + ".holder").read_text()
    assert entered
    assert not lock.with_name(lock.name + ".holder").exists()


# --- params --------------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize("cron", ["0 3 * *", "0 3 * * * *", "60 * * * *", "0 24 * * *",
                                  "0 3 * * 8", "0 3 * * fri-mon", "*/0 * * * *", "0 3 0 * *",
                                  "0 3 * 13 *", "@fortnightly", "every monday"])
def test_a_bad_cron_is_refused_naming_the_key(cron):
    with pytest.raises(ConfigError) as info:
        parse_params({"retrain": {"schedule": {"cron": cron}}})
    message = str(info.value)
    assert "retrain.schedule" in message and "cron" in message, message


@pytest.mark.unit
def test_a_bad_timezone_is_refused_naming_the_key():
    for zone in ("Mars/Olympus_Mons", "", "../etc/passwd"):
        with pytest.raises(ConfigError) as info:
            parse_params({"retrain": {"schedule": {"timezone": zone}}})
        message = str(info.value)
        assert "retrain.schedule" in message and "timezone" in message, message


@pytest.mark.unit
@pytest.mark.parametrize("cron", ["*/15 * * * *", "0 3 * * mon-fri", "@daily", "0 3 * * 1",
                                  "30 2 1,15 jan-jun *", "0 0 * * 7", "0 9-17/2 * * MON"])
def test_valid_schedules_are_accepted(cron):
    schedule = parse_params({"retrain": {"schedule": {"cron": cron, "timezone": "Europe/London"}}}).retrain.schedule
    assert (schedule.cron, schedule.timezone) == (cron, "Europe/London")


@pytest.mark.unit
def test_params_yaml_retrain_section_equals_the_defaults():
    assert load_params(REPO / "params.yaml").retrain == Params().retrain


# --- S3 (last: its module-scoped fixtures change the environment for the rest of the module) --


BUCKET = "pmc-sync-mirror"
PREFIX = "pmc/2026-11"


@pytest.mark.integration
def test_sync_from_s3_equals_the_folder_and_remembers_etags(source, tmp_path, moto_url, monkeypatch):
    """The corpus uploaded key for key under s3://pmc-sync-mirror/pmc/2026-11/ syncs to the same
    files as the folder does. A second sync from S3 fetches nothing and neither downloads nor
    hashes anything: the ETags are remembered. The folder-synced target, synced from S3, is
    recognised by MD5 ETag: nothing is fetched either."""
    import boto3

    client = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    files = [p for p in files_of(source) if not p.name.startswith(".")]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda p: client.put_object(
            Bucket=BUCKET, Key=f"{PREFIX}/{p.relative_to(source).as_posix()}", Body=p.read_bytes()), files))
    params = S3Params(endpoint_url=moto_url, max_attempts=2)
    uri = f"s3://{BUCKET}/{PREFIX}"

    from_s3, from_folder = tmp_path / "from-s3", tmp_path / "from-folder"
    report = sync(open_store(uri, params), from_s3, tmp_path / "state-s3", workers=2)
    do_sync(source, from_folder, tmp_path / "state-folder")
    assert tree(from_s3) == tree(from_folder) == tree(source, only_versions=True)
    assert report.new == versions(source) and report.source == uri
    assert report.fetched_objects == len(tree(from_folder))

    hashed: list[Path] = []
    md5_file = sync_module._md5_file
    monkeypatch.setattr(sync_module, "_md5_file", lambda path: hashed.append(path) or md5_file(path))
    store = open_store(uri, params)
    got: list[str] = []
    get = store.get
    monkeypatch.setattr(store, "get", lambda key: got.append(key) or get(key))
    second = sync(store, from_s3, tmp_path / "state-s3", workers=2)
    assert (second.fetched_objects, second.unchanged, second.anything) == (0, ARTICLES, False)
    assert (got, hashed) == ([], []), "the remembered ETags were not used"

    crossed = sync(store, from_folder, tmp_path / "state-folder", workers=2)
    assert (crossed.fetched_objects, crossed.unchanged) == (0, ARTICLES)
    assert got == [], "plain MD5 ETags need no download to compare content"
    assert hashed, "the local files were not compared with the ETags"
    assert tree(from_folder) == tree(source, only_versions=True)
