"""One descriptive sentence per item, built from the item table, for text encoders.

A template is a format string such as "{title}. Genres: {genres}. Tags: {tags}." or a list of
columns. It is cut into segments, one per field, each with the literal text around it:

    "{title}."   "Genres: {genres}."   "Tags: {tags}."

The literal between two fields is split at its first whitespace: what comes before belongs to
the previous field ("."), what comes after to the next ("Genres: "). A segment whose field is
null, blank or an empty list is dropped whole, so an item without tags reads "Toy Story
(1995). Genres: Animation, Comedy." with no "Tags: ." left over. List columns (genres, tags)
are joined with ", ". Everything is built with polars expressions, no per-item Python.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass, replace

import polars as pl

from lmrec import columns as C
from lmrec.columns import Role
from lmrec.data.dataset import Dataset
from lmrec.errors import ConfigError

LIST_SEPARATOR = ", "
# the default template uses whichever of these columns exist, in this order
_NAME_COLUMNS = ("title", "name")
_LABELLED_COLUMNS = ("genres", "category", "brand", "tags")
_FREE_TEXT_COLUMNS = ("description",)
_USABLE_ROLES = (Role.TEXT, Role.MULTI, Role.CATEGORICAL)


@dataclass(frozen=True)
class Segment:
    """One field with the literal text kept with it, and the separator written before it."""

    field: str
    leader: str = ""  # e.g. "Genres: "
    trailer: str = ""  # e.g. "."
    joiner: str = " "  # written before the segment unless it comes first


@dataclass(frozen=True)
class ItemTextTemplate:
    """How item-table columns become one text per item.

    Give `format` (a str.format-style string naming columns) or `columns` (each becomes
    "Column: value." except the first, which is written alone); with neither, the default
    uses whichever of title/name, genres/category/brand, tags, description exist.
    """

    format: str | None = None
    columns: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.format is not None and self.columns is not None:
            raise ConfigError("item text template: give a format string or columns, not both")
        if self.format is not None:
            parse_format(self.format)  # refuse a bad format when it is made, not when used

    def format_for(self, table: pl.DataFrame, usable: Sequence[str] | None = None) -> str:
        """The format string this template means for an item table with these columns."""
        if self.format is not None:
            return self.format
        if self.columns is not None:
            return _labelled_format(self.columns)
        present = [c for c in _NAME_COLUMNS if c in table.columns][:1]
        present += [c for c in (*_LABELLED_COLUMNS, *_FREE_TEXT_COLUMNS) if c in table.columns]
        if not present:  # no conventional names: every text-like attribute column
            present = [c for c in (usable or []) if c in table.columns]
        if not present:
            raise ConfigError(
                "the item table has no text to encode (no title, name, genres, category, "
                "brand, tags, description or other text/label columns); prepare the data with "
                "an item table, or give a template naming the columns to use")
        return _labelled_format(present)

    def segments(self, table: pl.DataFrame, usable: Sequence[str] | None = None
                 ) -> list[Segment]:
        return parse_format(self.format_for(table, usable))


def as_template(template: ItemTextTemplate | str | Sequence[str] | None) -> ItemTextTemplate:
    """A template from what users give: None, a format string ("{title} ..."), or columns.

    A string without braces is read as comma-separated column names ("title,genres").
    """
    if template is None:
        return ItemTextTemplate()
    if isinstance(template, ItemTextTemplate):
        return template
    if isinstance(template, str):
        if "{" in template:
            return ItemTextTemplate(format=template)
        cols = tuple(c.strip() for c in template.split(",") if c.strip())
    else:
        cols = tuple(str(c) for c in template)
    if not cols:
        raise ConfigError("item text template: no columns given")
    return ItemTextTemplate(columns=cols)


def item_texts(dataset: Dataset,
               template: ItemTextTemplate | str | Sequence[str] | None = None) -> list[str]:
    """One text per item, in internal item order (row i is item i); "" where nothing is known."""
    table = dataset.item_table
    usable = [c for c, spec in dataset.item_schema.items() if spec.role in _USABLE_ROLES]
    segments = as_template(template).segments(table, usable)
    missing = sorted({s.field for s in segments} - set(table.columns) - {C.ITEM})
    if missing:
        available = ", ".join(c for c in table.columns) or "none"
        raise ConfigError(f"item text template names unknown column(s) {missing}; the item "
                          f"table has: {available}")
    return texts_from_table(table, segments)


def texts_from_table(table: pl.DataFrame, segments: Sequence[Segment]) -> list[str]:
    """The template's text for every row of `table` (columns must exist)."""
    if table.height == 0:
        return []
    parts = []
    for seg in segments:
        value = _as_text(pl.col(seg.field), table.schema[seg.field],
                         strip_stop=seg.trailer.startswith("."))
        # concat_str is null when the value is: the segment disappears with its labels
        parts.append(pl.concat_str([pl.lit(seg.joiner + seg.leader), value, pl.lit(seg.trailer)]))
    text = (pl.concat_str(parts, ignore_nulls=True) if parts else pl.lit(""))
    return table.select(text.fill_null("").str.strip_chars().alias("text"))["text"].to_list()


def parse_format(fmt: str) -> list[Segment]:
    """Cut a format string into segments (see the module docstring)."""
    try:
        pieces = list(string.Formatter().parse(fmt))
    except ValueError as exc:
        raise ConfigError(f"item text template {fmt!r}: {exc}") from None
    if not any(name for _, name, _, _ in pieces):
        raise ConfigError(f"item text template {fmt!r} names no column (write e.g. '{{title}}')")
    segments: list[Segment] = []
    leader, joiner = "", ""
    for lit, name, spec, conv in pieces:
        if segments:  # the literal between the previous field and this one is split
            trailer, joiner, leader = _split_literal(lit) if name is not None else (lit, "", "")
            segments[-1] = replace(segments[-1], trailer=segments[-1].trailer + trailer)
        else:  # text before the first field leads it
            leader += lit
        if name is None:  # the literal after the last field
            continue
        if name == "" or not re.fullmatch(r"[^\[\].!:]+", name):
            raise ConfigError(f"item text template {fmt!r}: {{{name}}} is not a column name "
                              "(use plain names such as {title})")
        if spec or conv:
            raise ConfigError(f"item text template {fmt!r}: format specs and conversions "
                              f"in {{{name}}} are not supported")
        segments.append(Segment(name, leader, "", joiner))
    return segments


def _split_literal(lit: str) -> tuple[str, str, str]:
    """(trailer of the previous field, joiner, leader of the next) at the first whitespace."""
    m = re.search(r"\s+", lit)
    if m is None:  # "{a}/{b}": the literal leads the next field, nothing in between
        return "", "", lit
    return lit[:m.start()], m.group(), lit[m.end():]


def _labelled_format(columns: Sequence[str]) -> str:
    """ "{title}. Genres: {genres}. Tags: {tags}." for these columns (first one unlabelled)."""
    parts = []
    for i, col in enumerate(columns):
        if i == 0 or col in _FREE_TEXT_COLUMNS:
            parts.append(f"{{{col}}}.")
        else:
            parts.append(f"{col.replace('_', ' ').capitalize()}: {{{col}}}.")
    return " ".join(parts)


def _as_text(col: pl.Expr, dtype: pl.DataType, *, strip_stop: bool = False) -> pl.Expr:
    """A column as trimmed text, null where it is null, blank or an empty list."""
    if isinstance(dtype, pl.List | pl.Array):
        items = col.list.eval(pl.element().cast(pl.String).str.strip_chars()) if isinstance(
            dtype, pl.List) else col.arr.to_list().list.eval(
            pl.element().cast(pl.String).str.strip_chars())
        items = items.list.eval(pl.element().filter(pl.element().is_not_null()
                                                    & (pl.element() != "")))
        text = items.list.join(LIST_SEPARATOR)
    elif dtype.is_float():  # numeric columns are stored as floats: 1995.0 reads as 1995
        whole = col.is_finite() & (col.round(0) == col)
        text = (pl.when(col.is_nan()).then(None)
                .when(whole).then(col.cast(pl.Int64, strict=False).cast(pl.String))
                .otherwise(col.cast(pl.String)))
    else:
        text = col.cast(pl.String).str.strip_chars()
    if strip_stop:  # a value's own full stop would double up with the template's ("..")
        text = text.str.strip_chars_end(".").str.strip_chars()
    return pl.when(text.is_not_null() & (text != "")).then(text)
