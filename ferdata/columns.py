"""Names shared by several modules: columns, ledger fields and reject reasons.

A step that writes a column another module reads (the report, ``info``, ``split --group``) names it
here, and both sides import the constant, so a renamed column fails at import time instead of
silently emptying a report section. This module imports nothing.
"""

from __future__ import annotations

# ---------------------------------------------------------------- core schema
IMAGE = "image"
LABEL = "label"
ID = "id"
SOURCE = "source"
ORIGIN = "origin"
CORE_COLUMNS = (IMAGE, LABEL, ID, SOURCE, ORIGIN)
#: Lineage: ``root_id`` is the ``id`` a row had when it entered the dataset, ``parent_id`` the ``id``
#: before the last step that changed its pixels (null at entry); see :func:`ferdata.dataset.lineage_ids`.
ROOT_ID = "root_id"
PARENT_ID = "parent_id"
LINEAGE_COLUMNS = (ROOT_ID, PARENT_ID)

# ---------------------------------------------------------------- the rejects ledger
MANIFEST_FILE = "ferdata.json"
REJECTS_FILE = "rejects.parquet"
REJECT_COLUMNS = (ID, ORIGIN, "step", "reason", "details")
#: Optional binary ledger column: a small JPEG of the rejected image (ledgers without it still open).
THUMBNAIL = "thumbnail"
#: Internal columns a step sets to mark a row for the ledger (see :func:`ferdata.dataset.partition_rejects`).
REJECT_REASON = "_reject_reason"
REJECT_DETAILS = "_reject_details"

# ---------------------------------------------------------------- reject reasons of the row helper
#: An image that cannot be decoded or used is rejected with the reason of its
#: :class:`ferdata.images.ImageRejected` (``corrupt``, ``empty_file``, ``no_image``, ``not_an_image``,
#: ``too_many_pixels``, ``too_small``, ``unsupported_mode``), the same in every step.
IMAGE_REASONS = ("corrupt", "empty_file", "no_image", "not_an_image", "too_many_pixels", "too_small",
                 "unsupported_mode")

# ---------------------------------------------------------------- refine
#: Columns ``ferdata refine --mode flag`` adds (read by the report's label-suspects section).
SUSPECT_LABEL = "suspect_label"
LABEL_CONFIDENCE = "label_confidence"
LABEL_MARGIN = "label_margin"
TOP1_LABEL = "top1_label"
TOP1_CONFIDENCE = "top1_confidence"
TOP2_LABEL = "top2_label"
TOP2_CONFIDENCE = "top2_confidence"
FLAG_COLUMNS = (SUSPECT_LABEL, LABEL_CONFIDENCE, LABEL_MARGIN, TOP1_LABEL, TOP1_CONFIDENCE, TOP2_LABEL,
                TOP2_CONFIDENCE)
#: Columns ``ferdata refine --mode relabel`` adds (``label`` holds the new class).
LABEL_ORIGINAL = "label_original"
RELABEL_CONFIDENCE = "relabel_confidence"
RELABELED = "relabeled"
RELABEL_COLUMNS = (LABEL_ORIGINAL, RELABEL_CONFIDENCE, RELABELED)
#: Reject reason of ``ferdata refine --mode prune`` (a row whose label the model disagrees with).
LABEL_DISAGREEMENT = "label_disagreement"

# ---------------------------------------------------------------- dedupe
#: Columns the ``dedupe`` step writes (:mod:`ferdata.dedupe`), read by ``split``, the report and ``info``:
#: the duplicate group of a row (its smallest ``id``), the group's size, and the similar group (duplicate
#: groups the verifier linked as one person or session, kept; ``split --group similar``).
GROUP = "group"
GROUP_SIZE = "group_size"
SIMILAR_GROUP = "similar_group"
#: True on a constant (one-colour) image: grouped only by ``id``, never by its degenerate hash.
IS_CONSTANT = "is_constant"
#: The hash column is named after its method (``phash`` by default); ``<method>_of`` holds the ``id`` the
#: hash was computed from, so a hash of older pixels is never reused.
HASH_OF_SUFFIX = "_of"
#: Marks a ``dedupe --report-only`` run adds instead of removing rows (also ledger detail keys).
IS_DUPLICATE = "is_duplicate"
DUPLICATE_OF = "duplicate_of"
DUPLICATE_DISTANCE = "duplicate_distance"
DUPLICATE_REASON = "duplicate_reason"
DUPLICATE_SCORE = "duplicate_score"
DUPLICATE_MARK_COLUMNS = (IS_DUPLICATE, DUPLICATE_OF, DUPLICATE_DISTANCE, DUPLICATE_REASON, DUPLICATE_SCORE)
#: Reject reasons of the dedupe step.
EXACT_DUPLICATE = "exact_duplicate"
NEAR_DUPLICATE = "near_duplicate"
LABEL_CONFLICT = "label_conflict"
DUPLICATE_REASONS = (EXACT_DUPLICATE, NEAR_DUPLICATE, LABEL_CONFLICT)
#: Ledger detail keys of a removed duplicate that describe its survivor as the dedupe step saw it
#: (``split`` and ``label`` describe the removed row itself): the report pairs the two at the same
#: stage and finds the survivor again after later steps crop, upscale, move or remove it.
SURVIVOR_SPLIT = "survivor_split"
SURVIVOR_LABEL = "survivor_label"
SURVIVOR_ROOT_ID = "survivor_root_id"
#: the survivor's picture at dedupe time: a small JPEG (:func:`ferdata.dataset.ledger_thumbnail`), base64 text
SURVIVOR_THUMBNAIL = "survivor_thumbnail"
#: Column of the dedupe groups report's parquet copy (beside the CSV): each member's picture at dedupe time.
GROUP_THUMBNAIL = "thumbnail"
