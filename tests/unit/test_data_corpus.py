"""Tests for the reST-to-prose converter, the corpus builder and the shipped corpus asset."""

from __future__ import annotations

import json
import lzma
from pathlib import Path

import pytest

from bitcpm.data.build_corpus import build_corpus
from bitcpm.data.rst_text import collect_labels, rst_to_blocks
from bitcpm.data.sources import BUILTIN_CORPUS

pytestmark = pytest.mark.quick

PAGE = """\
.. _json-page:

:mod:`json` --- JSON encoder
============================

.. module:: json
   :synopsis: Encode and decode the JSON format.

:mod:`json` exposes an API familiar to users of :mod:`marshal`
and :func:`~pickle.dumps`, see :pep:`8` and `the spec <https://json.org>`_ [#note]_.

Encoding basic objects::

    >>> import json
    >>> json.dumps([1, 2])

.. code-block:: shell-session

    $ python -m json.tool

Basic Usage
-----------

.. function:: dump(obj, fp, *, skipkeys=False, \\
                   indent=None)

   Serialize *obj* as a **JSON** stream to ``fp.write()``.

   .. versionchanged:: 3.6
      All optional parameters are now keyword-only.

   .. versionadded:: 3.9

>>> json.loads('[]')
[]

+------+------+
| a    | b    |
+------+------+

=====  =====
col    col2
=====  =====
x      y
=====  =====

* First item that
  continues here.
* Second item, see :ref:`json-page`.

.. [#note] A footnote that is dropped.
"""


def test_rst_page_becomes_clean_prose() -> None:
    blocks = rst_to_blocks(PAGE, collect_labels(PAGE))
    titles = [(b.level, b.text) for b in blocks if b.level >= 0]
    assert titles == [(0, "json --- JSON encoder"), (1, "Basic Usage")]
    assert [b.text for b in blocks if b.level < 0] == [
        "json exposes an API familiar to users of marshal and dumps, see PEP 8 and the spec.",
        "Encoding basic objects:",
        "Serialize obj as a JSON stream to fp.write().",
        "Changed in version 3.6: All optional parameters are now keyword-only.",
        "New in version 3.9.",
        "- First item that continues here.",
        "- Second item, see json --- JSON encoder.",
    ]


def test_build_corpus_is_deterministic(tmp_path: Path) -> None:
    source = tmp_path / "src"
    for rel, title in [
        ("library/b.rst.txt", "Bees"),
        ("library/a.rst.txt", "Apple"),
        ("tutorial/t.rst.txt", "Tea"),
    ]:
        page = source / rel
        page.parent.mkdir(parents=True, exist_ok=True)
        body = f"{title} is described here in plain words. " * 20
        page.write_text(f"{title}\n{'=' * len(title)}\n\n{body}\n\nSome code::\n\n    x = 1\n")
    (source / "library" / "index.rst.txt").write_text("Index\n=====\n\n" + "toc words " * 100)
    stats = build_corpus(source, tmp_path / "one.jsonl.xz")
    build_corpus(source, tmp_path / "two.jsonl.xz")
    assert (tmp_path / "one.jsonl.xz").read_bytes() == (tmp_path / "two.jsonl.xz").read_bytes()
    with lzma.open(tmp_path / "one.jsonl.xz", "rt") as handle:
        docs = [json.loads(line)["text"] for line in handle]
    # Sections in fixed order (tutorial first), pages sorted within a section, index pages skipped.
    assert [d.split("\n\n")[0] for d in docs] == ["Tea", "Apple", "Bees"]
    assert all("x = 1" not in d and d.endswith("Some code:") for d in docs)
    assert stats["documents"] == 3


def test_shipped_corpus_is_large_clean_english() -> None:
    assert BUILTIN_CORPUS.stat().st_size <= 2_500_000
    with lzma.open(BUILTIN_CORPUS, "rt", encoding="utf-8") as handle:
        docs = [json.loads(line)["text"] for line in handle]
    text = "\n".join(docs)
    assert len(docs) > 1000 and len(text.encode()) > 4_000_000
    assert ":func:`" not in text and "\n>>> " not in text and ".. versionchanged::" not in text
    assert text.count(" the ") > 50_000
