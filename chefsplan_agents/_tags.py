"""Offer tags: short ``key=value`` statements a node signs into its offer (``jurisdiction=EU``).

The rules live here, below every layer, so settings (``PolicySettings.sensitive_tags``), bundles
(``Offer.tags``), the registry index and the tools check tags the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Final

from chefsplan_agents.errors import InvalidOfferTags

__all__ = ["MAX_OFFER_TAGS", "check_tags", "parse_tags"]

MAX_OFFER_TAGS: Final = 16
"""Most tags one offer carries."""

_TAG_KEY_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}")
_TAG_VALUE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.:/+-]{0,63}")


def check_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """Check offer tags (or a filter over them) and return them as a plain dict, keys sorted.

    A key is 1 to 32 of ``a-z 0-9 _ . -`` (first a letter or digit); a value 1 to 64 of
    letters, digits and `` _.:/+-`` (first a letter or digit); at most :data:`MAX_OFFER_TAGS`.

    Raises:
        InvalidOfferTags: One line naming the first tag that breaks a rule.
    """
    if not isinstance(tags, Mapping):
        raise InvalidOfferTags("tags must map keys to values, e.g. {'jurisdiction': 'EU'}")
    if len(tags) > MAX_OFFER_TAGS:
        raise InvalidOfferTags(f"{len(tags)} tags, at most {MAX_OFFER_TAGS}; drop some")
    for key, value in tags.items():
        if not isinstance(key, str) or not _TAG_KEY_RE.fullmatch(key):
            raise InvalidOfferTags(
                f"tag key {key!r}: use 1-32 of a-z, 0-9, '_', '.', '-', starting with a letter "
                "or digit"
            )
        if not isinstance(value, str) or not _TAG_VALUE_RE.fullmatch(value):
            raise InvalidOfferTags(
                f"tag {key}={value!r}: a value is 1-64 of letters, digits, space and _.:/+-, "
                "starting with a letter or digit"
            )
    return dict(sorted(tags.items()))


def parse_tags(items: Iterable[str]) -> dict[str, str]:
    """Tags from ``key=value`` strings (as a command line gives them).

    Raises:
        InvalidOfferTags: An item has no ``=``, a key repeats, or a tag breaks a rule.
    """
    tags: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidOfferTags(f"tag {item!r} is not key=value (e.g. jurisdiction=EU)")
        key, value = key.strip(), value.strip()
        if key in tags:
            raise InvalidOfferTags(f"tag {key!r} is given twice; give each key once")
        tags[key] = value
    return check_tags(tags)
