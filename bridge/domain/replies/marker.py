"""Rule 1, ``marker``: our own "##- Please type your reply above this line -##"."""

from __future__ import annotations

from bridge.domain.compose import MARKER
from bridge.domain.replies.lines import ONLY_DECORATION, Cut, Doc

_MARKER_CORE = " ".join(MARKER.strip("#- ").split()).lower()  # "please type your reply above this line"


def find_marker(doc: Doc) -> Cut | None:
    """The marker line, found even when quoted ("> > ##- ..."), re-spaced,
    re-cased or wrapped over up to three lines; everything from it down is
    our notification."""
    n = len(doc)
    for i in range(n):
        low = doc.bare[i].lower()
        if not low:
            continue
        if _MARKER_CORE in low:
            return _marker_cut(doc, i, i + 1)
        # Wrapped by a client: the phrase starts on this line, ends on one of
        # the next two. Only the joins are searched, so each line is read at
        # most three times.
        joined = low
        for j in (i + 1, i + 2):
            if j >= n or not doc.bare[j]:
                break
            joined = f"{joined} {doc.bare[j].lower()}"
            found = joined.find(_MARKER_CORE)
            if found != -1:
                if found < len(low):
                    return _marker_cut(doc, i, j + 1)
                break
    return None


def _marker_cut(doc: Doc, start: int, end: int) -> Cut:
    # "##-" wrapped onto a line of its own above the words belongs to the marker.
    if start > 0 and ONLY_DECORATION.fullmatch(doc.bare[start - 1]):
        start -= 1
    return Cut(start, end, "marker")
