"""The nbgrader side of the course: course layout and config, hidden checks, the preprocessors
that make verdicts unforgeable, and `meshlab grade` (replay/live, parallel)."""
