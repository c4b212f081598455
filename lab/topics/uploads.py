"""Corpora from files: a text file with one document per line, or a CSV file with chosen columns.

:func:`guess_columns` proposes which CSV columns hold the text, titles, labels and dates; :func:`load_choice`
reads the corpus a form asks for (a named corpus, or an uploaded file with its columns).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from lab.topics.corpora import CORPUS_NAMES, Corpus, clean_documents, load_corpus
from lab.topics.errors import TopicInputError

MAX_UPLOAD_BYTES = 20 * 2**20
NO_COLUMN = "(none)"  # the column choice that means "no such column"
# Column names that usually hold each role, most likely first (compared without case).
COLUMN_NAMES: dict[str, tuple[str, ...]] = {
    "text": ("text", "abstract", "abstracts", "document", "body", "content", "summary", "extract"),
    "title": ("title", "titles", "name", "headline"),
    "label": ("label", "labels", "topic", "category", "class"),
    "date": ("date", "year", "time", "published", "created"),
}


def decode_upload(raw: bytes, name: str = "the file") -> tuple[str, list[str]]:
    """Text of an uploaded file: UTF-8 (with or without BOM) or UTF-16 with a BOM; anything else is
    read as Windows-1252 with a note. Binary files are refused."""
    if len(raw) > MAX_UPLOAD_BYTES:
        raise TopicInputError(
            f"{name} is {len(raw) / 2**20:.1f} MB; the lab reads at most {MAX_UPLOAD_BYTES / 2**20:.0f} MB."
        )
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16"), []
    if b"\x00" in raw[:8192]:
        raise TopicInputError(f"{name} looks like a binary file, not text: upload a .csv or .txt file.")
    try:
        return raw.decode("utf-8-sig"), []
    except UnicodeDecodeError as error:
        note = (
            f"{name} is not UTF-8 (byte 0x{raw[error.start]:02x} at position {error.start:,}): it was read "
            "as Windows-1252, so a few characters may be wrong. Save it as UTF-8 to be sure."
        )
        return raw.decode("cp1252", errors="replace"), [note]


def is_csv(path: str | Path) -> bool:
    """Whether a file is read as a table (``.csv``, ``.tsv``) rather than one document per line."""
    return Path(path).suffix.lower() in {".csv", ".tsv"}


def read_text_file(path: str | Path) -> Corpus:
    """A corpus from a text file with one document per line."""
    path = Path(path)
    text, notes = decode_upload(path.read_bytes(), path.name)
    docs, _, _, _, cleaned = clean_documents(text.splitlines())
    return Corpus(name=path.name, docs=docs, notes=notes + cleaned, source=f"uploaded file {path.name}")


def csv_columns(path: str | Path) -> list[str]:
    """The header of a CSV file (for choosing the text, title, label and date columns)."""
    return list(_read_csv(path)[0].columns)


def guess_columns(columns: list[str]) -> dict[str, str | None]:
    """Which column probably holds each role (``text``, ``title``, ``label``, ``date``), by its name.

    The text falls back to the first column; the optional roles to None.
    """
    lowered = {c.lower(): c for c in columns}
    guesses = {
        role: next((lowered[n] for n in names if n in lowered), None) for role, names in COLUMN_NAMES.items()
    }
    if guesses["text"] is None and columns:
        guesses["text"] = columns[0]
    return guesses


def _read_csv(path: str | Path) -> tuple[pd.DataFrame, list[str]]:
    path = Path(path)
    text, notes = decode_upload(path.read_bytes(), path.name)
    try:
        dialect = csv.Sniffer().sniff(text[:20_000], delimiters=",;\t|")
        separator = dialect.delimiter
    except csv.Error:
        separator = ","
    try:
        frame = pd.read_csv(io.StringIO(text), sep=separator, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise TopicInputError(f"{path.name} could not be read as CSV: {str(error).splitlines()[0]}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame, notes


def read_csv(
    path: str | Path,
    text_column: str,
    *,
    title_column: str | None = None,
    label_column: str | None = None,
    date_column: str | None = None,
) -> Corpus:
    """A corpus from a CSV file: one document per row from ``text_column``, and optional titles, labels
    (to compare topics with) and dates."""
    path = Path(path)
    frame, notes = _read_csv(path)
    columns = list(frame.columns)
    roles = {"text": text_column, "title": title_column, "label": label_column, "date": date_column}
    for role, column in roles.items():
        if column and column not in columns:
            raise TopicInputError(
                f"{path.name} has no column {column!r} (for the {role}); its columns are: "
                f"{', '.join(repr(c) for c in columns) or 'none'}."
            )
    if not text_column:
        raise TopicInputError(f"Choose the column that holds the text; {path.name} has {', '.join(columns)}.")

    def column(name: str | None) -> list[str] | None:
        return frame[name].tolist() if name else None

    docs, titles, labels, dates, cleaned = clean_documents(
        column(text_column), column(title_column), column(label_column), column(date_column)
    )
    if labels is not None and len(set(labels)) < 2:
        notes.append(f"The label column {label_column!r} has a single value: no agreement can be measured.")
        labels = None
    return Corpus(
        name=path.name,
        docs=docs,
        titles=titles,
        labels=labels,
        dates=dates,
        notes=notes + cleaned,
        source=f"uploaded file {path.name}",
    )


def load_choice(
    choice: str,
    file: str | Path | None = None,
    *,
    text_column: str | None = None,
    title_column: str | None = None,
    label_column: str | None = None,
    date_column: str | None = None,
) -> Corpus:
    """The corpus a form asks for: a named corpus (:data:`CORPUS_NAMES`), or an uploaded file.

    A CSV file is read with the chosen columns (None, empty or :data:`NO_COLUMN`: no such column); any
    other file as text, one document per line.

    Raises:
        TopicInputError: no file was uploaded, or no text column chosen for a CSV file.
    """
    if choice in CORPUS_NAMES:
        return load_corpus(choice)
    if not file:
        raise TopicInputError("Upload a CSV or text file first, or choose the Wikipedia corpus.")
    if not is_csv(file):
        return read_text_file(file)

    def column(value: str | None) -> str | None:
        return None if not value or value == NO_COLUMN else value

    if column(text_column) is None:
        raise TopicInputError("Choose the column that holds the text of each document.")
    return read_csv(
        file,
        column(text_column),
        title_column=column(title_column),
        label_column=column(label_column),
        date_column=column(date_column),
    )


def corpus_from_form(values: Mapping[str, Any]) -> Corpus:
    """:func:`load_choice` with plain form values: ``corpus`` (the choice), ``file``, and the
    ``text_column``, ``title_column``, ``label_column`` and ``date_column`` chosen for a CSV file."""
    return load_choice(
        values["corpus"],
        values.get("file"),
        text_column=values.get("text_column"),
        title_column=values.get("title_column"),
        label_column=values.get("label_column"),
        date_column=values.get("date_column"),
    )
