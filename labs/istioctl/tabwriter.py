"""Go's `text/tabwriter` as istioctl configures it, so tables line up byte for byte.

istioctl builds every table with `tabwriter.NewWriter(out, 0, 8, 5, ' ', 0)` (minwidth 0,
padding 5, space padding, no flags; e.g. `istioctl/pkg/writer/envoy/configdump/cluster.go`):
each tab-terminated cell is padded to the widest cell of its column plus the padding, and the
last cell of a line is written as is — so a row whose last cell is empty keeps the trailing
spaces of the cell before it, as in upstream's testdata (`testdata/secret/istio/output`).
"""

from __future__ import annotations

from collections.abc import Sequence


def render(lines: Sequence[Sequence[str]], padding: int = 5) -> str:
    """The lines (header first), cells aligned; every line ends with a newline."""
    if not lines:
        return ""
    columns = max(len(line) for line in lines)
    widths = [0] * columns
    for line in lines:
        for index, cell in enumerate(line[:-1]):
            widths[index] = max(widths[index], len(cell))
    out = []
    for line in lines:
        cells = [f"{cell:<{widths[i] + padding}}" for i, cell in enumerate(line[:-1])]
        out.append("".join(cells) + (line[-1] if line else "") + "\n")
    return "".join(out)
