"""The four PATCH flavours of the Kubernetes API, and field ownership (`managedFields`).

One import point for the request handlers; each flavour lives in a module of its own:
- `json_patch`: RFC 6902, as `application/json-patch+json` (`json_patch.py`).
- `merge_patch`: RFC 7386, as `application/merge-patch+json`, kubectl's patch for custom resources
  (`json_patch.py`).
- `strategic_merge_patch`: what `kubectl apply` (client side) sends for built-in kinds; lists merge
  by their merge key (`strategic_merge.py`, which states where it differs from apimachinery).
- `server_side_apply`: `application/apply-patch+yaml` with `managedFields` in the real FieldsV1
  format (`server_side_apply.py`, which lists its simplifications of structured-merge-diff), and
  `track_update` to record ownership for create/update/patch like the real server
  (`managed_fields.py`).
"""

from __future__ import annotations

from .json_patch import json_patch, merge_patch
from .managed_fields import track_update
from .server_side_apply import server_side_apply
from .strategic_merge import strategic_merge_patch, supports_strategic_merge

__all__ = ["json_patch", "merge_patch", "server_side_apply", "strategic_merge_patch",
           "supports_strategic_merge", "track_update"]
