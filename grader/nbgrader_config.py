"""nbgrader configuration for the meshlab course.

Run nbgrader from this directory (`cd grader && nbgrader generate_assignment day1`), or through
`meshlab grade`, which does. A broken config is logged and ignored by nbgrader, so
tests/test_grading.py loads this file and asserts every value below.
"""

from grader.config import configure

c = get_config()  # type: ignore[name-defined]  # noqa: F821 - injected by traitlets
configure(c)
