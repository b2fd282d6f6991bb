"""The tilt series of a batch: from a folder, a glob or a CSV/STAR table.

Every item is one tilt series ``(n_tilts, y, x)`` with its angle file (``.tlt``/``.rawtlt``/
``.mdoc``, found next to the stack when not given) and optional per-item overrides. Its
output name is the stack's stem (or the table's ``name``); two items with the same output
name are refused before any work.
"""

from __future__ import annotations

import csv
import glob as _glob
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["BatchItem", "STACK_SUFFIXES", "TABLE_COLUMNS", "discover_items", "read_table"]

#: File endings of tilt-series stacks picked up from a folder.
STACK_SUFFIXES = (".mrc", ".st", ".ali", ".mrcs")

#: Table column → (BatchItem field, kind). ``tilt_series`` is required.
TABLE_COLUMNS: dict[str, tuple[str, str]] = {
    "tilt_series": ("tilt_series", "path"),
    "angles": ("angles", "path"),
    "name": ("name", "str"),
    "pixel_size": ("pixel_size_angstrom", "float"),
    "tilt_axis_angle": ("tilt_axis_angle_deg", "float"),
    "thickness": ("thickness", "int"),
    "defocus": ("defocus_angstrom", "float"),
    "defocus_file": ("defocus_file", "path"),
}

#: Other spellings accepted in tables (RELION tomography STAR names, long field names).
_ALIASES = {
    "path": "tilt_series", "stack": "tilt_series", "rlnTomoTiltSeriesName": "tilt_series",
    "rlnMicrographName": "tilt_series", "rlnTomoName": "name",
    "rlnTomoTiltSeriesPixelSize": "pixel_size", "rlnMicrographOriginalPixelSize": "pixel_size",
    "pixel_size_angstrom": "pixel_size", "tilt_axis_angle_deg": "tilt_axis_angle",
    "defocus_angstrom": "defocus", "tlt": "angles", "mdoc": "angles",
}


@dataclass(frozen=True)
class BatchItem:
    """One tilt series of a batch.

    Attributes
    ----------
    name
        Output name (file stem of everything written for it).
    tilt_series
        MRC stack ``(n_tilts, y, x)``.
    angles
        ``.tlt``/``.rawtlt``/``.mdoc``; None: the file next to the stack.
    pixel_size_angstrom, tilt_axis_angle_deg, thickness, defocus_angstrom, defocus_file
        Per-item overrides (Å, degrees, voxels, Å underfocus, defocus file); None: the
        config's or the file's.
    """

    name: str
    tilt_series: Path
    angles: Path | None = None
    pixel_size_angstrom: float | None = None
    tilt_axis_angle_deg: float | None = None
    thickness: int | None = None
    defocus_angstrom: float | None = None
    defocus_file: Path | None = None
    row: int | None = field(default=None, compare=False)

    def config_overrides(self) -> dict[str, Any]:
        """The overrides that are fields of a reconstruction config."""
        changes = {"tilt_axis_angle_deg": self.tilt_axis_angle_deg, "thickness": self.thickness,
                   "defocus_angstrom": self.defocus_angstrom}
        return {k: v for k, v in changes.items() if v is not None}

    def where(self) -> str:
        """``"row 3 (TS_03)"`` or ``"TS_03"`` for error messages."""
        return f"row {self.row} ({self.name})" if self.row is not None else self.name


def _is_stack(path: Path) -> bool:
    name = path.name
    return (path.is_file() and path.suffix.lower() in STACK_SUFFIXES and not name.startswith(".")
            and not name.endswith("~"))


def _items_from_paths(paths: list[Path], what: str) -> list[BatchItem]:
    stacks = sorted(p for p in paths if _is_stack(p))
    if not stacks:
        raise ValueError(f"{what} holds no tilt series ({', '.join(STACK_SUFFIXES)} files); "
                         "give a folder of stacks, a glob such as 'data/*.mrc', or a CSV/STAR "
                         "table with a tilt_series column.")
    return [BatchItem(name=p.stem, tilt_series=p) for p in stacks]


def _cell(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    text = str(value).strip()
    return None if text in ("", "None", "none", "null", "NaN", "nan") else value


def _convert(value: Any, kind: str, column: str, row: int, base: Path) -> Any:
    value = _cell(value)
    if value is None:
        return None
    try:
        if kind == "float":
            out = float(value)
            if not math.isfinite(out):
                raise ValueError
            return out
        if kind == "int":
            number = float(value)
            if number != int(number) or number < 1:
                raise ValueError
            return int(number)
    except (TypeError, ValueError):
        raise ValueError(f"table row {row}: {column} = {value!r} is not a valid "
                         f"{'positive whole number' if kind == 'int' else 'number'}.") from None
    if kind == "path":
        path = Path(str(value).strip()).expanduser()
        return path if path.is_absolute() else base / path
    return str(value).strip()


def read_table(path: str | os.PathLike[str]) -> list[BatchItem]:
    """The items of a CSV (header row) or STAR table; relative paths are relative to it.

    Columns: ``tilt_series`` (required), ``angles``, ``name``, ``pixel_size`` (Å),
    ``tilt_axis_angle`` (degrees), ``thickness`` (voxels), ``defocus`` (Å) and
    ``defocus_file``; RELION's ``rlnTomoTiltSeriesName``/``rlnTomoName``/
    ``rlnTomoTiltSeriesPixelSize`` are understood. An empty cell keeps the default.

    Raises
    ------
    ValueError
        No rows, no ``tilt_series`` column, an unknown column or a bad value (naming the row).
    """
    table = Path(path)
    rows = _read_rows(table)
    if not rows:
        raise ValueError(f"table {table} has no rows; add one row per tilt series.")
    columns = list(rows[0])
    mapped = {c: _ALIASES.get(c.lstrip("_"), c.lstrip("_")) for c in columns}
    unknown = [c for c, m in mapped.items() if m not in TABLE_COLUMNS]
    if unknown:
        raise ValueError(f"table {table}: unknown column(s) {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(TABLE_COLUMNS)}.")
    if "tilt_series" not in mapped.values():
        raise ValueError(f"table {table} has no tilt_series column (it has: "
                         f"{', '.join(columns)}); add a column 'tilt_series' with one stack "
                         "path per row.")
    base = table.parent
    items = []
    for number, row in enumerate(rows, start=1):
        values: dict[str, Any] = {}
        for column, value in row.items():
            target, kind = TABLE_COLUMNS[mapped[column]]
            values[target] = _convert(value, kind, column, number, base)
        if values.get("tilt_series") is None:
            raise ValueError(f"table {table} row {number} has an empty tilt_series.")
        values.setdefault("name", None)
        values["name"] = values["name"] or Path(values["tilt_series"]).stem
        items.append(BatchItem(row=number, **values))
    return items


def _read_rows(table: Path) -> list[dict[str, Any]]:
    if not table.is_file():
        raise FileNotFoundError(f"table {table} does not exist.")
    if table.suffix.lower() == ".star":
        import starfile

        data = starfile.read(table, always_dict=True)
        frames = [df for df in data.values() if hasattr(df, "to_dict")]
        if not frames:
            raise ValueError(f"STAR file {table} has no data block with columns.")
        return frames[0].to_dict(orient="records")
    with open(table, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None:
            return []
        rows = [dict(r) for r in reader]
    for number, row in enumerate(rows, start=1):
        if None in row:
            raise ValueError(f"table {table} row {number} has more cells than the header has "
                             "columns.")
    return rows


def discover_items(source: str | os.PathLike[str]) -> list[BatchItem]:
    """The items of a folder, a glob pattern or a ``.csv``/``.star`` table.

    Raises
    ------
    ValueError
        Nothing found, a bad table, or two items with the same output name — before any work.
    """
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        items = _items_from_paths(list(path.iterdir()), f"folder {path}")
    elif path.suffix.lower() in (".csv", ".star"):
        items = read_table(path)
    elif any(ch in text for ch in "*?["):
        items = _items_from_paths([Path(p) for p in _glob.glob(text)], f"the glob {text!r}")
    elif path.is_file():
        items = _items_from_paths([path], f"{path}")
    else:
        raise FileNotFoundError(f"input {text!r} is neither a folder, a glob, a .csv/.star table "
                                "nor a tilt series.")
    check_unique_names(items)
    return items


def check_unique_names(items: list[BatchItem]) -> None:
    """``ValueError`` naming two items that would write the same output."""
    seen: dict[str, BatchItem] = {}
    for item in items:
        if not item.name or item.name.startswith(".") or "/" in item.name:
            raise ValueError(f"{item.where()}: output name {item.name!r} must be a plain file "
                             "name (no '/', not hidden).")
        other = seen.get(item.name.lower())
        if other is not None:
            raise ValueError(
                f"two tilt series would write the same output {item.name!r}: "
                f"{other.tilt_series} and {item.tilt_series}; rename one or give a 'name' "
                "column in a table.")
        seen[item.name.lower()] = item
