"""The `linkerd` command for meshlab's embedded cluster (version, check, inject, uninject,
identity); other clusters are handed to the real binary that `meshlab tools install` puts in
.tools/bin."""
