"""Tables that fit the terminal: identifying columns always stay, the others drop by priority.

Rich alone squeezes every column of a too-wide table, which on an 80-column terminal cuts task
names to ``min…`` and hides whole columns behind ellipses. Here each column says whether it
identifies a row (kept, folded onto several lines if it must) and, if not, how much it matters;
optional columns are added, most important first, while the table still fits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from rich.table import Table
from rich.text import Text

# What a rich Table with the default box spends per column (a space each side and a rule)
# and once for the outer rule.
_PER_COLUMN = 3
_OUTER = 1
Justify = Literal["left", "right", "center"]


@dataclass
class Column:
    """One column: its header, its cells, and how it behaves when space runs out.

    ``priority`` None: the column identifies a row and always stays. Otherwise lower numbers
    are kept first. ``shrink_to``: the column may be cut to this width with an ellipsis
    (free text such as messages) instead of being dropped. ``fold_to`` (identifying columns):
    long values may fold onto more lines, down to this width, to make room for the
    ``essential`` columns; other columns are shown only where nothing has to fold.
    """

    header: str
    cells: list[str | Text] = field(default_factory=list)
    priority: int | None = None
    justify: Justify = "left"
    style: str | None = None
    shrink_to: int | None = None
    fold_to: int | None = None
    essential: bool = False

    def width(self) -> int:
        cells = (Text(c) if isinstance(c, str) else c for c in self.cells)
        return max([len(self.header), *(c.cell_len for c in cells)])

    def need(self) -> int:
        full = self.width()
        return full if self.shrink_to is None else min(full, self.shrink_to)


def fitted_table(
    columns: Sequence[Column],
    width: int,
    *,
    title: str | None = None,
    caption: str | None = None,
    row_styles: Sequence[str | None] | None = None,
    end_sections: Sequence[bool] | None = None,
) -> Table:
    """A table of the ``columns`` that fit in ``width`` characters, in their given order."""
    # An optional column with nothing in it (no message on any row) is left out unmentioned.
    columns = [c for c in columns if c.priority is None or any(str(x) for x in c.cells)]
    ids = [c for c in columns if c.priority is None]
    used = _OUTER + sum(c.width() + _PER_COLUMN for c in ids)
    folded = _OUTER + sum(min(c.width(), c.fold_to or c.width()) + _PER_COLUMN for c in ids)
    keep = {id(c) for c in ids}
    for col in sorted((c for c in columns if c.priority is not None), key=_priority):
        cost = col.need() + _PER_COLUMN
        if used + cost <= width or (col.essential and folded + cost <= width):
            keep.add(id(col))
            used += cost
            folded += cost
    shown = [c for c in columns if id(c) in keep]
    if used > width:  # identifying columns fold: break long values after a '.', '/' or '_'
        room = (width - (used - sum(c.width() for c in ids))) // len(ids)
        shown = [
            _refold(c, max(c.fold_to, room)) if c.fold_to is not None and c in ids else c
            for c in shown
        ]
    hidden = [c.header for c in columns if id(c) not in keep]
    if hidden:
        note = f"not shown at {width} columns: {', '.join(hidden)} (a wider terminal or --json)"
        caption = f"{caption}\n{note}" if caption else note
    table = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
    for col in shown:
        table.add_column(
            col.header,
            justify=col.justify,
            style=col.style,
            # Identifying text folds rather than being cut; free text is cut with an ellipsis.
            overflow="ellipsis" if col.shrink_to is not None else "fold",
            # Only identifying columns fold: a dtype or a size split over lines reads wrong.
            no_wrap=col.priority is not None,
            min_width=None if col.shrink_to is None else min(col.width(), col.shrink_to),
        )
    rows = max((len(c.cells) for c in columns), default=0)
    for i in range(rows):
        table.add_row(
            *(c.cells[i] for c in shown),
            style=row_styles[i] if row_styles else None,
            end_section=end_sections[i] if end_sections else False,
        )
    return table


def _refold(col: Column, room: int) -> Column:
    cells: list[str | Text] = []
    for cell in col.cells:
        text = Text(cell) if isinstance(cell, str) else cell
        cells.append(_break(text, room) if text.cell_len > room else cell)
    return Column(col.header, cells, col.priority, col.justify, col.style)


def _break(text: Text, room: int) -> Text:
    """``text`` with line breaks after separators so that no line is longer than ``room``
    (a hard break where a stretch has no separator)."""
    plain, lines, start = text.plain, [], 0
    while len(plain) - start > room:
        cut = plain.rfind(" ", start, start + room + 1)  # a space first, then a separator
        if cut < start + room // 3:
            cut = max(plain.rfind(sep, start, start + room) for sep in "./_-")
        end = cut + 1 if cut >= start + room // 3 else start + room
        lines.append(text[start:end])
        start = end
    lines.append(text[start:])
    return Text("\n").join(lines)


def _priority(col: Column) -> int:
    assert col.priority is not None
    return col.priority
