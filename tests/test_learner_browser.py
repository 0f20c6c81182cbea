"""A learner's first session, in headless Chromium: `meshlab lab --no-browser` on a fresh HOME,
the course home with every lab at 0, a lab without answers, hidden tests or instructor tools,
one exercise answered and checked, and the progress on the home afterwards. Screenshots go to
the test artifacts (tests/jupyterlab_browser.py: artifacts_dir)."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import urllib.request
from pathlib import Path

from jupyterlab_browser import (
    chromium_path,
    free_port,
    lab_env,
    open_lab,
    stop_group,
    wait_for_server,
)

from labs.catalog import load_catalog
from labs.cluster import CLUSTER_VARIABLES, EmbeddedCluster

ANSWER = ("!kubectl create namespace bookinfo\n"
          "!kubectl label namespace bookinfo istio-injection=enabled")


def _row(progress: str, title: str) -> str:
    """The progress table's row of one lab, as text: "1.1 Join the mesh… 1/4 1/4"."""
    found = re.search(rf"{re.escape(title)}\s+(\d+/\d+)\s+(\d+/\d+)", progress)
    assert found, f"no progress row for {title!r} in:\n{progress}"
    return f"{found.group(1)} {found.group(2)}"


def test_a_learner_s_first_session(tmp_path: Path) -> None:
    chromium_path()  # skip (or fail, as root) before starting anything
    home, token, port = tmp_path / "home", secrets.token_hex(16), free_port()
    home.mkdir()
    env = lab_env(tmp_path / "jupyter", token,
                  {k: v for k, v in os.environ.items() if k not in CLUSTER_VARIABLES
                   and k not in ("MESHLAB_WORKSPACE", "MESHLAB_SOLUTIONS")})
    env["HOME"] = str(home)
    log = tmp_path / "lab.log"
    with log.open("wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "labs.cli", "lab", "--no-browser",
                                "--port", str(port)], env=env, stdout=out,
                               stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    catalog = load_catalog()
    install = catalog.lab("day1.install")
    try:
        wait_for_server(url, token, timeout=120, process=server, log=log)
        workspace = home / "meshlab" / "course"
        assert (workspace / "course-home.ipynb").is_file()
        with urllib.request.urlopen(f"{url}/?token={token}", timeout=10) as first:
            assert "/lab/tree/course-home.ipynb" in first.url  # the home opens first
        with open_lab(url, token, name="learner") as learner:
            assert {"course-home.ipynb", "day1", "day2"} <= set(learner.file_browser_entries())
            learner.open_file("course-home.ipynb")
            for lab in catalog.labs:
                learner.wait_for_text(lab.goal)
            progress = learner.run_cell("labs.widgets.progress_board()", timeout=120)
            for lab in catalog.labs:
                assert _row(progress, lab.title).startswith("0/")
            learner.screenshot("learner-1-home")

            learner.open_file(install.notebook)
            sources = "\n".join(learner.cell_sources())
            assert "BEGIN SOLUTION" not in sources and "HIDDEN TESTS" not in sources
            assert "raise NotImplementedError()" in sources
            assert "Nbgrader" not in learner.menu_bar_items()
            tabs = learner.sidebar_tabs("left") + learner.sidebar_tabs("right")
            assert not any("Create Assignment" in tab for tab in tabs), tabs
            learner.run_cell("cluster_selection = {}")  # top to bottom, as a learner does
            learner.run_cell("cluster = labs.connect(cluster_selection)", timeout=120)
            learner.replace_source('labs.solution("day1.install.namespace")', ANSWER)
            learner.run_cell(ANSWER, timeout=60)
            learner.run_cell('check_button("day1.install")')
            checked = learner.click_button("Check my work", cell='check_button("day1.install")',
                                           expect="points", timeout=180)
            assert "✔" in checked and "namespace" in checked
            learner.screenshot("learner-2-lab-checked")

            learner.open_file("course-home.ipynb")
            progress = learner.run_cell("labs.widgets.progress_board()", timeout=120)
            assert _row(progress, install.title).startswith("1/4")
            traffic = catalog.lab("day1.traffic")
            assert _row(progress, traffic.title).startswith("0/")
            learner.screenshot("learner-3-progress")
            # a lab's link in the progress table opens it in JupyterLab
            learner.cell("labs.widgets.progress_board()").get_by_role(
                "link", name=f"{traffic.number} {traffic.title}").click()
            learner.page.locator(".lm-TabBar-tabLabel", has_text="02-traffic.ipynb").wait_for(
                timeout=30_000)
    finally:
        stop_group(server)
        EmbeddedCluster("meshlab", home / ".meshlab").down()
