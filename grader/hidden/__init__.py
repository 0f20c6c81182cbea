"""The grader's hidden checks, one module per lab, written with the same `@check` decorator as
the public ones (`hidden=True`). `labs.checks.registry.load_checks(hidden=True)` imports them,
after the public checks so a lab's public checks — and its fatal one — run first; pyproject.toml
declares this package under the entry point group `meshlab.hidden_checks`."""
