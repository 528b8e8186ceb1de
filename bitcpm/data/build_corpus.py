"""Build the shipped English corpus from the reST sources of the Python 3.11 documentation.

Usage (Debian/Ubuntu: ``apt-get install python3.11-doc`` installs the sources under
``/usr/share/doc/python3.11/html/_sources``)::

    python -m bitcpm.data.build_corpus --source /usr/share/doc/python3.11/html/_sources \
        --output bitcpm/data/assets/corpus_en.jsonl.xz

Each page is converted to prose (code, tables and markup dropped) and split at its top-level
sections; small sections are merged so documents are a few KB each. Output order is the sorted
order of the page paths, so the asset is byte-for-byte reproducible from the same sources.
"""

from __future__ import annotations

import argparse
import json
import lzma
from collections.abc import Iterator
from pathlib import Path

from bitcpm.data.rst_text import Block, collect_labels, rst_to_blocks

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "assets" / "corpus_en.jsonl.xz"
# Parts of the docs that are mostly prose; c-api and distutils are mostly signatures and boilerplate.
SECTIONS = ("tutorial", "library", "howto", "faq", "reference", "whatsnew", "using", "glossary")
# Pages that are only tables of contents or pulled in from outside the source tree.
EXCLUDED_NAMES = ("index", "changelog", "contents")
MIN_SECTION_CHARS = 1500
MIN_DOCUMENT_CHARS = 300
SUFFIX = ".rst.txt"


def source_pages(source: Path) -> list[Path]:
    """Selected pages in deterministic (section order, then sorted path) order."""
    pages: list[Path] = []
    for section in SECTIONS:
        single = source / f"{section}{SUFFIX}"
        if single.is_file():
            pages.append(single)
            continue
        for page in sorted((source / section).rglob(f"*{SUFFIX}"), key=lambda p: p.as_posix()):
            if page.name[: -len(SUFFIX)] not in EXCLUDED_NAMES:
                pages.append(page)
    return pages


def _is_prose(text: str) -> bool:
    """Reject paragraphs that are mostly symbols (leftover signatures, grammar rules, ASCII art)."""
    letters = sum(ch.isalpha() or ch.isspace() for ch in text)
    return letters >= 0.75 * len(text)


def page_documents(blocks: list[Block]) -> list[str]:
    """Split one page's blocks into documents at top-level sections, merging short ones."""
    page_title = next((b.text for b in blocks if b.level == 0), "")
    chunks: list[list[str]] = [[]]
    for block in blocks:
        if 0 <= block.level <= 1 and chunks[-1]:
            chunks.append([])
        if block.level >= 0 or _is_prose(block.text):
            chunks[-1].append(block.text)
    documents: list[str] = []
    pending: list[str] = []
    for chunk in chunks:
        pending.extend(chunk)
        if sum(len(p) for p in pending) >= MIN_SECTION_CHARS:
            documents.append(_join(page_title, pending))
            pending = []
    if pending and documents and sum(len(p) for p in pending) < MIN_SECTION_CHARS:
        # A short tail section reads best as the end of the previous document.
        documents[-1] = documents[-1] + "\n\n" + "\n\n".join(pending)
    elif pending:
        documents.append(_join(page_title, pending))
    return [doc for doc in documents if len(doc) >= MIN_DOCUMENT_CHARS]


def _join(page_title: str, paragraphs: list[str]) -> str:
    """Join paragraphs, repeating the page title on later sections so each document has context."""
    if page_title and paragraphs and paragraphs[0] != page_title:
        paragraphs = [page_title, *paragraphs]
    return "\n\n".join(paragraphs)


def iter_documents(source: Path) -> Iterator[str]:
    """All corpus documents in output order."""
    labels: dict[str, str] = {}
    for page in sorted(source.rglob(f"*{SUFFIX}"), key=lambda p: p.as_posix()):
        # Labels are global in Sphinx: a :ref: may point at any page.
        labels.update(collect_labels(page.read_text(encoding="utf-8")))
    for page in source_pages(source):
        yield from page_documents(rst_to_blocks(page.read_text(encoding="utf-8"), labels))


def build_corpus(source: Path, output: Path) -> dict[str, int]:
    """Write the xz-compressed JSONL corpus and return its statistics."""
    if not source.is_dir() or not any(source.glob(f"*/*{SUFFIX}")):
        raise ValueError(f"{source} does not look like a Sphinx _sources directory (no *{SUFFIX} files)")
    output.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"text": doc}, ensure_ascii=False) + "\n" for doc in iter_documents(source)]
    raw = "".join(lines).encode("utf-8")
    tmp = output.with_name(output.name + ".tmp")
    # Fixed preset and integrity check keep the compressed bytes reproducible.
    tmp.write_bytes(lzma.compress(raw, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=9 | lzma.PRESET_EXTREME))
    tmp.replace(output)
    text_bytes = sum(len(json.loads(line)["text"].encode("utf-8")) for line in lines)
    return {
        "documents": len(lines),
        "text_bytes": text_bytes,
        "jsonl_bytes": len(raw),
        "compressed_bytes": output.stat().st_size,
    }


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="Sphinx _sources dir of the Python docs")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="output .jsonl.xz path")
    args = parser.parse_args(argv)
    stats = build_corpus(args.source, args.output)
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
