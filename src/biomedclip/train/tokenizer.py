"""The text tower's tokenizer and config, in the HF folder format open_clip's HFTokenizer loads.

PubMedBERT built its uncased WordPiece vocabulary from PubMed text. Where training continues from
a checkpoint (`train.init_from`, e.g. Microsoft's BiomedCLIP), the checkpoint's own vocabulary is
used; where a user has a local copy of PubMedBERT (`train.tokenizer.pubmedbert_dir`), its
tokenizer is used as it is; otherwise an uncased WordPiece vocabulary is built from the training
captions, the same way, and saved as a DVC-tracked folder so every later run (and every
registered model) uses the same one. A vocabulary larger than the checkpoint's embedding table
is refused (its ids would index rows that do not exist). `text_tower.json` in the folder says
where the vocabulary came from, and its hub id when it has one.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from biomedclip.atomic_io import atomic_directory, atomic_write_bytes
from biomedclip.models import located, model_uri
from biomedclip.params import Params
from biomedclip.stage import StageContext
from biomedclip.tables import open_table, read_batches
from biomedclip.tracking import TrackingParams
from biomedclip.train.params import TokenizerParams

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PROFILES = Path(__file__).with_name("profiles")
RECORD = "text_tower.json"


class VocabularyMismatch(ValueError):
    """A vocabulary that does not fit the embedding table of the checkpoint training starts from."""


def train_captions(pairs: Path, batch_rows: int = 50_000) -> Iterator[str]:
    """Captions of the train split, streamed from the manifest (val/test text stays unseen)."""
    parquet = open_table(pairs, "pairs manifest", ("caption", "split"))
    for batch in read_batches(parquet, batch_rows, ("caption", "split")):
        for caption, split in zip(batch.column("caption").to_pylist(), batch.column("split").to_pylist(),
                                  strict=True):
            if split == "train" and caption:
                yield caption


def wordpiece_vocabulary(captions: Iterator[str], *, vocab_size: int, min_frequency: int) -> list[str]:
    """A deterministic uncased WordPiece vocabulary: the special tokens, every character seen (as a
    word start and as a `##` continuation, so any word can be spelled), then whole words by
    frequency (ties broken alphabetically) up to `vocab_size`.

    Deterministic on purpose: the `tokenizers` trainer breaks ties between equally frequent merges
    by hash-map order, which differs from process to process, so the same captions gave a
    different vocabulary (and a different model) on every run.
    """
    from tokenizers.normalizers import BertNormalizer
    from tokenizers.pre_tokenizers import BertPreTokenizer

    normalizer = BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=True, lowercase=True)
    splitter = BertPreTokenizer()
    counts: Counter[str] = Counter()
    for caption in captions:
        counts.update(word for word, _ in splitter.pre_tokenize_str(normalizer.normalize_str(caption)))
    characters = sorted({c for word in counts for c in word})
    vocabulary = [*SPECIAL_TOKENS, *characters, *(f"##{c}" for c in characters)]
    known = set(vocabulary)
    words = sorted((w for w, n in counts.items() if n >= min_frequency and w not in known),
                   key=lambda w: (-counts[w], w))
    return vocabulary + words[: max(0, vocab_size - len(vocabulary))]


def build_tokenizer(captions: Iterator[str], out: Path, *, vocab_size: int, min_frequency: int,
                    model_max_length: int = 512) -> int:
    """Build the vocabulary and save it as an HF tokenizer folder; returns its size."""
    from transformers import BertTokenizer

    vocabulary = wordpiece_vocabulary(captions, vocab_size=vocab_size, min_frequency=min_frequency)
    with atomic_directory(out) as staging:
        (staging / "vocab.txt").write_text("".join(f"{token}\n" for token in vocabulary), encoding="utf-8")
        tokenizer = BertTokenizer(vocab=str(staging / "vocab.txt"), do_lower_case=True,
                                  model_max_length=model_max_length)
        tokenizer.save_pretrained(staging)
        size = len(tokenizer)
    log.info("built an uncased WordPiece vocabulary of %d tokens in %s", size, out)
    return size


def copy_tokenizer(source: Path, out: Path, *, record: dict[str, object] | None = None,
                   table_rows: int | None = None, table_of: str = "") -> int:
    """Use a local PubMedBERT (or any HF BERT) tokenizer folder as it is; with `table_rows`,
    refuse it when it is larger than the embedding table of `table_of`."""
    from transformers import AutoTokenizer

    if not (source / "vocab.txt").is_file() and not (source / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{source}: no vocab.txt or tokenizer.json (a local PubMedBERT folder)")
    tokenizer = AutoTokenizer.from_pretrained(source)
    if table_rows is not None and len(tokenizer) > table_rows:
        raise VocabularyMismatch(f"the vocabulary in {source} has {len(tokenizer)} tokens, the embedding table of "
                                 f"{table_of} {table_rows} rows: it does not match that checkpoint")
    with atomic_directory(out) as staging:
        tokenizer.save_pretrained(staging)
        (staging / RECORD).write_text(json.dumps({"source": str(source), **(record or {})}, indent=2,
                                                 sort_keys=True) + "\n")
    return len(tokenizer)


def hub_id(tokenizer_dir: Path) -> str | None:
    """The hub id of the text tower the vocabulary in `tokenizer_dir` came with, if any."""
    try:
        return json.loads((tokenizer_dir / RECORD).read_text()).get("hub_id")
    except (OSError, ValueError):
        return None


def text_directory(profile: str, tokenizer_dir: Path, out: Path) -> Path:
    """The folder open_clip's HF text tower is built from: the profile's BERT config (vocab size
    from the tokenizer where the profile leaves it open) and the tokenizer files."""
    config = json.loads((PROFILES / "text" / f"{profile}.json").read_text())
    config.pop("_comment", None)
    if config["vocab_size"] is None:
        vocab = tokenizer_dir / "vocab.txt"
        config["vocab_size"] = sum(1 for _ in vocab.open(encoding="utf-8"))
    out.mkdir(parents=True, exist_ok=True)
    for item in tokenizer_dir.iterdir():
        if item.is_file():
            shutil.copy2(item, out / item.name)
    atomic_write_bytes(out / "config.json", (json.dumps(config, indent=2, sort_keys=True) + "\n").encode())
    return out


def from_checkpoint(params: TokenizerParams, init_from: str,
                    tracking: TrackingParams | None = None) -> dict[str, object]:
    """The vocabulary for training that continues from `init_from`: the checkpoint's own (or
    `pubmedbert_dir`'s), checked against the checkpoint's embedding table."""
    with located(init_from, tracking=tracking) as files:
        if files.text is None:
            raise VocabularyMismatch(f"train.init_from {init_from}: its text tower is open_clip's own "
                                     "transformer, not a BERT; the biomedclip profiles need a BERT text tower")
        rows = files.text.vocab_size()
        source = params.pubmedbert_dir or files.text.tokenizer_dir
        hub = files.text.hub_id if params.pubmedbert_dir is None else None
        size = copy_tokenizer(source, params.out, table_rows=rows, table_of=init_from,
                              record={"init_from": init_from, "hub_id": hub, "embedding_rows": rows})
    what = "the vocabulary of" if params.pubmedbert_dir is None else f"{params.pubmedbert_dir}, checked against"
    return {"source": f"{what} {init_from}", "vocab_size": size, "embedding_rows": rows}


def prepare_tokenizer(params: TokenizerParams, pairs: Path, *, init_from: str | None = None,
                      tracking: TrackingParams | None = None) -> dict[str, object]:
    """The tokenizer stage: the vocabulary of the checkpoint training starts from (`init_from`),
    else PubMedBERT's tokenizer when a local copy is configured, else a vocabulary built from the
    manifest's train captions. Returns what it did."""
    if init_from is not None:
        return from_checkpoint(params, init_from, tracking)
    if params.pubmedbert_dir is not None:
        size = copy_tokenizer(params.pubmedbert_dir, params.out)
        return {"source": str(params.pubmedbert_dir), "vocab_size": size}
    size = build_tokenizer(train_captions(pairs), params.out, vocab_size=params.vocab_size,
                           min_frequency=params.min_frequency)
    return {"source": f"WordPiece from the train captions of {pairs}", "vocab_size": size}


@dataclass(frozen=True)
class TokenizerReport:
    """The `tokenizer` stage's report."""

    out: Path
    source: str  # where the vocabulary came from
    vocab_size: int

    def markdown(self) -> str:
        return f"## Tokenizer `{self.out}`\n\n{self.vocab_size} tokens; source: {self.source}\n"


def run(params: Params, context: StageContext) -> TokenizerReport:
    """The `tokenizer` stage: the vocabulary `prepare_tokenizer` chooses, into `train.tokenizer.out`
    (`train.init_from` in its full form: `@champion` is a version of register.model_name)."""
    init_from = None if params.train.init_from is None else \
        model_uri(params.train.init_from, params.register.model_name)
    spec = params.train.tokenizer
    done = prepare_tokenizer(spec, params.ingest.outputs.pairs, init_from=init_from, tracking=params.tracking)
    return TokenizerReport(spec.out, str(done["source"]), int(done["vocab_size"]))
