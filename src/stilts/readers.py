"""Official file formats → rows. Each reader yields (where, row) with `where` = "file:line".

Readers know formats, not tasks; the task type turns a row into a normalised record.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import zlib
from collections.abc import Iterator
from pathlib import Path

from stilts.errors import StiltsError

Row = tuple[str, dict]
SENTEVAL_SPLITS = {"tr": "train", "va": "validation", "te": "test"}

csv.field_size_limit(1 << 27)


def _open(path: Path):
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig")
    return open(path, encoding="utf-8-sig", newline="")


def _json_lines(lines, where: str) -> Iterator[Row]:
    """One JSON object per non-empty line; `where` names the file (or archive member) in errors."""
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise StiltsError(f"{where}:{n}: malformed JSON line: {e.msg}") from None
        if not isinstance(obj, dict):
            raise StiltsError(f"{where}:{n}: expected a JSON object, got {type(obj).__name__}")
        yield f"{where}:{n}", obj


def jsonl(path: Path, **_) -> Iterator[Row]:
    with _open(path) as f:
        yield from _json_lines(f, str(path))


def jsonl_lst(path: Path, **_) -> Iterator[Row]:
    """AI2 leaderboard layout (SocialIQA): `x.jsonl` with labels one per line in `x-labels.lst`."""
    labels_path = path.with_name(path.name.replace(".jsonl", "-labels.lst"))
    if not labels_path.is_file():
        raise StiltsError(f"{labels_path}: labels file missing (expected beside {path.name})")
    labels = [ln.strip() for ln in labels_path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    rows = list(jsonl(path))
    if len(labels) != len(rows):
        raise StiltsError(f"{labels_path}: {len(labels)} labels for {len(rows)} examples in {path.name}")
    for (where, row), label in zip(rows, labels):
        yield where, {**row, "label": label}


def tsv(path: Path, header: bool = True, **_) -> Iterator[Row]:
    """GLUE tsv: no quoting (quotes are text). Without a header, columns are named "0", "1", ..."""
    with _open(path) as f:
        names = None
        for n, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            cols = line.split("\t")
            if header and names is None:
                names = cols
                continue
            if names is not None and len(cols) < len(names):
                raise StiltsError(f"{path}:{n}: expected {len(names)} tab-separated columns, got {len(cols)}")
            keys = names if names is not None else [str(i) for i in range(len(cols))]
            row = dict(zip(keys, cols))
            row["__extra__"] = cols[len(keys):]
            yield f"{path}:{n}", row


def tsv_noheader(path: Path, **kw) -> Iterator[Row]:
    return tsv(path, header=False, **kw)


def csv_rows(path: Path, **_) -> Iterator[Row]:
    with _open(path) as f:
        reader = csv.DictReader(f)
        try:
            for row in reader:
                if None in row:
                    raise StiltsError(f"{path}:{reader.line_num}: more columns than the header has")
                yield f"{path}:{reader.line_num}", row
        except csv.Error as e:
            raise StiltsError(f"{path}:{reader.line_num}: malformed CSV: {e}") from None


def senteval(path: Path, split: str = "train", **_) -> Iterator[Row]:
    """SentEval probing: `split<TAB>label<TAB>sentence`, all splits in one file (tr/va/te)."""
    with _open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            cols = line.split("\t")
            if len(cols) != 3 or cols[0] not in SENTEVAL_SPLITS:
                raise StiltsError(f"{path}:{n}: expected 'tr|va|te<TAB>label<TAB>sentence'")
            if SENTEVAL_SPLITS[cols[0]] == split:
                yield f"{path}:{n}", {"label": cols[1], "sentence": cols[2], "idx": f"{n}"}


def dnc_acceptability(path: Path, split: str = "train", fold: str = "fold1", **_) -> Iterator[Row]:
    """DNC function-word acceptability: `acceptability-<name>_data.json` (a JSON list of
    {pair-id, context, label}) and `..._metadata.json` beside it, whose misc.<fold> says
    train/dev/test for each row (10 cross-validation folds; the paper used fold 1)."""
    meta_path = path.with_name(path.name.replace("_data.json", "_metadata.json"))
    if not meta_path.is_file():
        raise StiltsError(f"{meta_path}: metadata file missing (expected beside {path.name})")
    data, meta = _json_list(path), _json_list(meta_path)
    if len(data) != len(meta):
        raise StiltsError(f"{meta_path}: {len(meta)} metadata rows for {len(data)} rows in {path.name}")
    want = {"train": "train", "validation": "dev", "test": "test"}[split]
    for n, (row, m) in enumerate(zip(data, meta), 1):
        phase = ((m or {}).get("misc") or {}).get(fold)
        if phase is None:
            raise StiltsError(f"{meta_path}: row {n} has no misc.{fold}")
        if phase == want:
            yield f"{path}:row {n}", row


def _json_list(path: Path) -> list:
    try:
        with _open(path) as f:
            obj = json.load(f)
    except json.JSONDecodeError as e:
        raise StiltsError(f"{path}:{e.lineno}: malformed JSON: {e.msg}") from None
    if not isinstance(obj, list):
        raise StiltsError(f"{path}: expected a JSON list, got {type(obj).__name__}")
    return obj


def qamr(path: Path, **_) -> Iterator[Row]:
    """QAMR `data/filtered/<split>.tsv` (one QA pair per row, no header) with the sentences from
    `data/wiki-sentences.tsv` (id<TAB>space-tokenised sentence)."""
    sent_path = path.parent.parent / "wiki-sentences.tsv"
    if not sent_path.is_file():
        raise StiltsError(f"{sent_path}: sentence file missing (QAMR keeps sentences apart from the QA rows)")
    sentences = {}
    for _, row in tsv(sent_path, header=False):
        sentences[row["0"]] = row.get("1", "")
    names = ["sentence_id", "target_words", "worker", "qa_index", "target_word", "question", "answer",
             "validator1", "validator2"]
    for where, row in tsv(path, header=False):
        row = {name: row.get(str(i), "") for i, name in enumerate(names)}
        if row["sentence_id"] not in sentences:
            raise StiltsError(f"{where}: sentence '{row['sentence_id']}' is not in {sent_path.name} "
                              "(PTB sentences need the Penn Treebank; bring your own)")
        row["sentence"] = sentences[row["sentence_id"]]
        yield where, row


def blimp_zip(path: Path, split: str = "train", validation_every: int = 5, **_) -> Iterator[Row]:
    """BLiMP.zip (data/<paradigm>.jsonl, 1,000 minimal pairs each). BLiMP has no splits: a pair goes to
    validation when a hash of (paradigm, pairID) falls in 1 of `validation_every` buckets, else train."""
    import hashlib
    import zipfile

    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise StiltsError(f"{path}: not a zip archive") from None
    with archive:
        for name in sorted(n for n in archive.namelist() if n.endswith(".jsonl") and "__MACOSX" not in n):
            for where, row in _json_lines(archive.read(name).decode("utf-8").splitlines(), f"{path}!{name}"):
                key = f"{row.get('UID', name)}:{row.get('pairID', where.rsplit(':', 1)[1])}"
                bucket = int(hashlib.sha256(key.encode()).hexdigest(), 16) % validation_every
                if (bucket == 0) == (split == "validation"):
                    yield where, {**row, "idx": key}


def json_list(path: Path, **_) -> Iterator[Row]:
    """A JSON list of objects (one per example), as `datasets`' json builder reads it."""
    for n, row in enumerate(_json_list(path), 1):
        if not isinstance(row, dict):
            raise StiltsError(f"{path}: item {n} is not a JSON object")
        yield f"{path}:item {n}", row


def parquet(path: Path, **_) -> Iterator[Row]:
    """Apache Parquet, read by pyarrow (as `datasets`' parquet builder does)."""
    import pyarrow
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pyarrow.ArrowInvalid, OSError) as e:
        raise StiltsError(f"{path}: not a readable Parquet file ({str(e).splitlines()[0][:200]})") from None
    for n, row in enumerate(table.to_pylist(), 1):
        yield f"{path}:row {n}", row


READERS = {"jsonl": jsonl, "json": json_list, "parquet": parquet, "jsonl_lst": jsonl_lst, "tsv": tsv,
           "tsv_noheader": tsv_noheader, "csv": csv_rows, "senteval": senteval,
           "dnc_acceptability": dnc_acceptability, "qamr": qamr, "blimp_zip": blimp_zip}


def read(fmt: str, path: Path, split: str) -> Iterator[Row]:
    if fmt not in READERS:
        raise StiltsError(f"unknown file format '{fmt}' (known: {', '.join(READERS)})")
    return _text_only(READERS[fmt](path, split=split), path)


def _text_only(rows: Iterator[Row], path: Path) -> Iterator[Row]:
    """Bytes that are not UTF-8 text (a binary file, a compressed file without its suffix) or a broken gzip
    stream end as a one-line error naming the file, not a decoding traceback."""
    try:
        yield from rows
    except UnicodeDecodeError:
        raise StiltsError(f"{path}: not UTF-8 text (a binary or compressed file?)") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise StiltsError(f"{path}: not a readable gzip file ({e})") from None
