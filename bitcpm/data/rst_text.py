"""Convert reStructuredText (Sphinx flavour) into plain prose paragraphs."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bitcpm.data.rst_inline import InlineConverter

# Underline/overline characters reST accepts for section titles.
_ADORNMENT = re.compile(r"^([=\-~^*#\"+`:'.<>_])\1{2,}\s*$")
_DIRECTIVE = re.compile(r"^\.\.\s+([\w:.-]+)::(?:\s+(.*))?$")
_OPTION_LINE = re.compile(r"^:[\w][\w -]*:(\s|$)")
_LIST_MARKER = re.compile(r"^([-*+\u2022]|#\.|\d+\.|\(\d+\)|\d+\))\s+")
_SIMPLE_TABLE_BORDER = re.compile(r"^=+( +=+)+\s*$")
_LABEL = re.compile(r"^\.\.\s+_([^:`]+):\s*$")
_SUBSTITUTION_DEF = re.compile(r"^\.\.\s+\|([^|]+)\|\s+replace::\s+(.*)$")

# fmt: off
# Directives whose whole body is code, markup tables or build metadata rather than prose.
SKIPPED_DIRECTIVES = frozenset({
    "code-block", "sourcecode", "code", "doctest", "testcode", "testoutput", "testsetup", "testcleanup",
    "productionlist", "toctree", "include", "literalinclude", "image", "figure", "tabularcolumns",
    "list-table", "table", "csv-table", "index", "module", "currentmodule", "moduleauthor", "sectionauthor",
    "codeauthor", "highlight", "contents", "only", "availability", "audit-event", "raw", "miscnews",
    "program", "rubric", "hlist", "math",
})
# Directives whose argument is running text (or a title), so it is kept as a paragraph.
TEXT_ARGUMENT_DIRECTIVES = frozenset({
    "note", "warning", "seealso", "important", "caution", "tip", "hint", "attention", "danger", "error",
    "admonition", "topic", "sidebar", "impl-detail", "epigraph", "container",
})
# fmt: on
# Directives that read as "Changed in version X: ..." in rendered docs.
VERSION_DIRECTIVES = {
    "versionadded": "New in version {0}",
    "versionchanged": "Changed in version {0}",
    "deprecated": "Deprecated since version {0}",
    "deprecated-removed": "Deprecated since version {0}, will be removed in version {1}",
}


@dataclass
class Block:
    """One output unit: a section title (level >= 0) or a paragraph (level -1)."""

    text: str
    level: int = -1


@dataclass
class _Paragraph:
    """Lines of the paragraph being accumulated and where its text starts."""

    lines: list[str] = field(default_factory=list)
    indent: int = 0
    content_indent: int = 0


def collect_labels(source: str) -> dict[str, str]:
    """Map each `.. _label:` target in a page to the title of the section it precedes."""
    lines = source.splitlines()
    labels: dict[str, str] = {}
    pending: list[str] = []
    for i, line in enumerate(lines):
        match = _LABEL.match(line.strip())
        if match:
            pending.append(match.group(1).strip().lower())
            continue
        if not line.strip() or not pending:
            continue
        # The first non-blank line after a label is either a title (overlined or underlined) or not.
        title = None
        if i + 1 < len(lines) and _ADORNMENT.match(lines[i + 1]) and not _ADORNMENT.match(line):
            title = line.strip()
        elif _ADORNMENT.match(line) and i + 2 < len(lines) and _ADORNMENT.match(lines[i + 2]):
            title = lines[i + 1].strip()
        if title:
            for label in pending:
                labels[label] = title
        pending = []
    return labels


class RstToText:
    """Block-level reST walker that yields titles and prose paragraphs, dropping code and tables."""

    def __init__(self, source: str, labels: dict[str, str] | None = None) -> None:
        self.lines = source.expandtabs(8).splitlines()
        substitutions: dict[str, str] = {}
        self.inline = InlineConverter(labels or {}, substitutions)
        for line in self.lines:
            match = _SUBSTITUTION_DEF.match(line.strip())
            if match:
                substitutions[match.group(1)] = self.inline(match.group(2))
        self.blocks: list[Block] = []
        self.adornments: list[tuple[str, bool]] = []
        self.paragraph: _Paragraph | None = None
        self.skip_deeper_than: int | None = None
        self.skip_until_blank = False
        self.skip_table = False
        self.version_prefix: tuple[str, int] | None = None

    def convert(self) -> list[Block]:
        """Walk all lines once and return the resulting blocks."""
        i = 0
        while i < len(self.lines):
            i = self._step(i)
        self._flush()
        self._emit_version_prefix_alone(-1)
        return self.blocks

    def _step(self, i: int) -> int:
        """Consume the line(s) starting at index `i`; return the next index to look at."""
        line = self.lines[i]
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if self.skip_until_blank:
            if stripped:
                return i + 1
            self.skip_until_blank = False
        if self.skip_table:
            # A simple table ends at a border line that is followed by a blank line.
            nxt = self.lines[i + 1].strip() if i + 1 < len(self.lines) else ""
            if not (_SIMPLE_TABLE_BORDER.match(stripped) and not nxt):
                return i + 1
            self.skip_table = False
            return i + 1
        if self.skip_deeper_than is not None:
            if not stripped or indent > self.skip_deeper_than:
                return i + 1
            self.skip_deeper_than = None
        if not stripped:
            self._flush()
            return i + 1
        if self.version_prefix is not None and indent <= self.version_prefix[1]:
            self._flush()
            self._emit_version_prefix_alone(indent)
        title_end = self._try_title(i)
        if title_end is not None:
            return title_end
        if _ADORNMENT.match(stripped) and self.paragraph is None:
            return i + 1
        if stripped.startswith(".. ") or stripped == "..":
            self._flush()
            return self._directive(i, stripped, indent)
        if stripped.startswith("__ "):
            self._flush()
            self.skip_deeper_than = indent
            return i + 1
        if self.paragraph is None and (stripped.startswith(">>>") or stripped.startswith("| ")):
            self.skip_until_blank = True
            return i + 1
        if self.paragraph is None and _SIMPLE_TABLE_BORDER.match(stripped):
            self.skip_table = True
            return i + 1
        if self.paragraph is None and stripped[:2] in ("+-", "+="):
            self.skip_until_blank = True
            return i + 1
        self._add_line(stripped, indent)
        return i + 1

    def _try_title(self, i: int) -> int | None:
        """Emit a section title starting at line `i` if there is one; return the index after it."""
        if self.paragraph is not None:
            return None
        line = self.lines[i]
        nxt = self.lines[i + 1] if i + 1 < len(self.lines) else ""
        after = self.lines[i + 2] if i + 2 < len(self.lines) else ""
        if _ADORNMENT.match(line) and nxt.strip() and _ADORNMENT.match(after) and after[0] == line[0]:
            self._title(nxt.strip(), (line[0], True))
            return i + 3
        if (
            not line[0].isspace()
            and not _ADORNMENT.match(line)
            and _ADORNMENT.match(nxt)
            and len(nxt.rstrip()) >= len(line.rstrip())
            and not line.startswith(".. ")
        ):
            self._title(line.strip(), (nxt[0], False))
            return i + 2
        return None

    def _title(self, raw: str, style: tuple[str, bool]) -> None:
        """Record a section title; its level follows the order adornment styles first appear."""
        if style not in self.adornments:
            self.adornments.append(style)
        self.blocks.append(Block(self.inline(raw), self.adornments.index(style)))

    def _directive(self, i: int, stripped: str, indent: int) -> int:
        """Handle an explicit markup line: directive, comment, target, footnote or substitution."""
        match = _DIRECTIVE.match(stripped)
        self.skip_deeper_than = indent
        if match is None or match.group(1) in SKIPPED_DIRECTIVES or match.group(1).startswith("|"):
            return i + 1
        name, argument = match.group(1), (match.group(2) or "").strip()
        # Only the body of kept directives survives; it is indented deeper than the directive.
        self.skip_deeper_than = None
        j = i + 1
        continuation: list[str] = []
        # Option lines, signature continuations and inline content sit right below, indented deeper.
        content_indent = indent + 3
        while j < len(self.lines) and self.lines[j].strip() and self._indent(j) > indent:
            text = self.lines[j].strip()
            if text.startswith(".. "):
                break  # a nested directive is handled on its own
            if not _OPTION_LINE.match(text):
                continuation.append(text)
                content_indent = self._indent(j)
            j += 1
        if name in VERSION_DIRECTIVES:
            parts = argument.split(None, 2 if name == "deprecated-removed" else 1)
            versions = parts[: 2 if name == "deprecated-removed" else 1]
            rest = parts[len(versions) :]
            label = VERSION_DIRECTIVES[name].format(*versions, "")
            if rest or continuation:
                self.paragraph = _Paragraph([f"{label}:", *rest, *continuation], content_indent, content_indent)
            else:
                self.version_prefix = (label, indent)
            return j
        if name in TEXT_ARGUMENT_DIRECTIVES and (argument or continuation):
            lines = ([argument] if argument else []) + continuation
            # Left open so that a trailing "::" is handled like in any paragraph.
            self.paragraph = _Paragraph(lines, content_indent, content_indent)
        # Anything else (function, class, method, option, ...) has a signature as argument: dropped.
        return j

    def _indent(self, j: int) -> int:
        """Indentation width of line `j`."""
        return len(self.lines[j]) - len(self.lines[j].lstrip())

    def _emit_version_prefix_alone(self, indent: int) -> None:
        """A version directive without a body becomes a one-sentence paragraph."""
        if self.version_prefix is not None and indent <= self.version_prefix[1]:
            self.blocks.append(Block(self.version_prefix[0] + "."))
            self.version_prefix = None

    def _add_line(self, stripped: str, indent: int) -> None:
        """Append a text line to the open paragraph, or start a new paragraph."""
        marker = _LIST_MARKER.match(stripped)
        para = self.paragraph
        # A line inside an unclosed ``literal`` continues it even if it looks like a list item.
        in_literal = para is not None and sum(line.count("``") for line in para.lines) % 2 == 1
        if para is not None and (in_literal or (not marker and indent in (para.content_indent, para.indent))):
            para.lines.append(stripped)
            return
        self._flush()
        if marker:
            bullet = marker.group(1)
            text = stripped[marker.end() :]
            bullet = "-" if not bullet[0].isdigit() and bullet[0] != "(" else bullet
            content_indent = indent + marker.end()
            self.paragraph = _Paragraph([f"{bullet} {text}"], indent, content_indent)
        else:
            self.paragraph = _Paragraph([stripped], indent, indent)

    def _flush(self) -> None:
        """Close the open paragraph; a trailing '::' announces a literal block, which is skipped."""
        para = self.paragraph
        if para is None:
            return
        self.paragraph = None
        text = " ".join(para.lines)
        if text.endswith("::"):
            self.skip_deeper_than = para.indent
            # reST renders "word::" as "word:" and drops a "::" that stands apart.
            body = text[:-2]
            text = body.rstrip() if not body or body[-1].isspace() else body + ":"
        text = self.inline(text)
        if not text or text in ("-", ":"):
            return
        if self.version_prefix is not None and para.indent > self.version_prefix[1]:
            text = f"{self.version_prefix[0]}: {text}"
            self.version_prefix = None
        self.blocks.append(Block(text))


def rst_to_blocks(source: str, labels: dict[str, str] | None = None) -> list[Block]:
    """Convert one reST page into titles and prose paragraphs."""
    return RstToText(source, labels).convert()
