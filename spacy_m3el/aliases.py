"""Fuzzy alias lookup: aliases within one edit of a mention's name.

A misspelt or variant name ("Michal Jordan") has no entry in the alias table,
and without one the linker has only dense retrieval to go on. This index
finds the aliases within one edit (a letter inserted, deleted, replaced, or
two neighbours swapped) of the normalized name, with a deletion index (the
SymSpell idea): every alias is stored under itself and each of its one-letter
deletions, so a lookup only generates the query's own deletions.
"""

from typing import Dict, Iterable, List, Set

MIN_LENGTH = 4  # shorter names are too easily one edit away from another


def deletions(text: str) -> Set[str]:
    """The text and every string made from it by deleting one character."""
    return {text} | {text[:i] + text[i + 1 :] for i in range(len(text))}


def within_one_edit(a: str, b: str) -> bool:
    """Whether a and b differ by at most one insertion, deletion, substitution or swap."""
    if a == b:
        return True
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) > len(b):
        a, b = b, a
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    if len(a) == len(b):
        swapped = i + 1 < len(a) and a[i] == b[i + 1] and a[i + 1] == b[i]
        return a[i + 1 :] == b[i + 1 :] or (swapped and a[i + 2 :] == b[i + 2 :])
    return a[i:] == b[i + 1 :]


class FuzzyAliasIndex:
    """Normalized aliases, found by any name within one edit of them.

    aliases (Iterable[str]): Normalized alias strings.
    """

    def __init__(self, aliases: Iterable[str]):
        self._keys: Dict[str, Set[str]] = {}
        self.size = 0
        for alias in set(aliases):
            if len(alias) < MIN_LENGTH:
                continue
            self.size += 1
            for key in deletions(alias):
                self._keys.setdefault(key, set()).add(alias)

    def lookup(self, name: str) -> List[str]:
        """The aliases within one edit of ``name`` (normalized), closest ordering by text."""
        if len(name) < MIN_LENGTH:
            return []
        found: Set[str] = set()
        for key in deletions(name):
            found.update(self._keys.get(key, ()))
        return sorted(alias for alias in found if within_one_edit(name, alias))
