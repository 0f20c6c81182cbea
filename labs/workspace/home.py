"""The course home: a notebook at the workspace root listing both days, each lab with its goal,
time and a link that opens it, and a cell showing the learner's progress (the same checks as
`meshlab check`, re-run by its Refresh button)."""

from __future__ import annotations

import nbformat

from labs.catalog import Catalog

HOME_NOTEBOOK = "course-home.ipynb"

_INTRO = """# Your service-mesh course

Two days, hands on, on a Kubernetes cluster of your own (`kubectl` in any cell talks to it).
Open a lab from the tables below and work top to bottom:

- cells marked **Your turn** start with `raise NotImplementedError()`: replace it with your answer;
- **Check my work** at the end of each lab checks what your cluster *does*, with a hint for
  anything not done yet;
- stuck on one exercise? `labs.solution("day1.traffic.routes")` shows the course's answer for
  it (the progress table notes that you looked);
- skipped a lab? `meshlab solve day1.traffic` in a terminal brings your cluster to where that lab
  leaves it, and `meshlab reset day1.traffic` deletes what the lab created, to start it over.
"""

_PROGRESS = """## Your progress

Run the cell below: it checks every lab against your cluster (a few seconds per lab) and shows
checks passed and points. **Refresh** checks again. The same table in a terminal:
`meshlab progress`."""


def _day_table(catalog: Catalog, day_index: int) -> str:
    day = catalog.days[day_index]
    rows = [f"## {day.title}", "", "| lab | you will | time |", "|---|---|---|"]
    rows += [f"| [{lab.number} {lab.title}]({lab.notebook}) | {lab.goal} | {lab.minutes} min |"
             for lab in day.labs]
    return "\n".join(rows)


def home_notebook(catalog: Catalog) -> nbformat.NotebookNode:
    """The course home for `catalog` (regenerated on each workspace sync)."""
    cells = [nbformat.v4.new_markdown_cell(_INTRO)]
    cells += [nbformat.v4.new_markdown_cell(_day_table(catalog, i))
              for i in range(len(catalog.days))]
    cells += [nbformat.v4.new_markdown_cell(_PROGRESS),
              nbformat.v4.new_code_cell("import labs.widgets\n\nlabs.widgets.progress_board()")]
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata.update(kernelspec={"display_name": "Python 3", "language": "python",
                                         "name": "python3"},
                             language_info={"name": "python"})
    for index, cell in enumerate(notebook.cells):
        cell.id = f"home-{index}"  # stable ids: the same catalog gives the same file
    return notebook
