"""Go's `text/tabwriter` as linkerd's viz tables use it: `tabwriter.NewWriter(w, 0, 0, 3, ' ',
tabwriter.AlignRight)` with the first column's left padding stripped afterwards (linkerd/linkerd2
`viz/cmd/stat.go` `renderStats`, `edges.go`), so every cell is right-aligned and a name column
that should read left-aligned is padded to its width before it goes in (`%-Ns`)."""

from __future__ import annotations

from collections.abc import Sequence

PADDING = 3


def render(lines: Sequence[Sequence[str]]) -> str:
    """Rows of tab-terminated cells (header first), right-aligned, one newline per row."""
    columns = max((len(line) for line in lines), default=0)
    widths = [0] * columns
    for line in lines:
        for index, cell in enumerate(line):
            widths[index] = max(widths[index], len(cell))
    out = []
    for line in lines:
        text = "".join(f"{cell:>{widths[i] + PADDING}}" for i, cell in enumerate(line))
        out.append(text[PADDING:] + "\n")
    return "".join(out)


def left(cells: Sequence[str], header: str) -> list[str]:
    """`header` and `cells` padded to their common width, as stat.go's `nameTemplate`."""
    width = max([len(header), *(len(c) for c in cells)])
    return [f"{c:<{width}}" for c in (header, *cells)]
