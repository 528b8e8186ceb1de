"""Inline reST markup (roles, literals, links, emphasis) reduced to the words a reader sees."""

from __future__ import annotations

import re


class InlineConverter:
    """Strips inline markup (roles, literals, links, emphasis) while keeping the visible words."""

    _LITERAL = re.compile(r"``(.+?)``")
    _ROLE = re.compile(r":((?:[\w-]+:)*[\w-]+):`((?:[^`\\]|\\.)*)`")
    _LINK = re.compile(r"`([^`<]*?)\s*<([^`>]*)>`__?")
    _NAMED_REF = re.compile(r"`([^`]+)`__?")
    _DEFAULT_ROLE = re.compile(r"`([^`]+)`")
    _STRONG = re.compile(r"\*\*(\S(?:.*?\S)?)\*\*")
    _EMPHASIS = re.compile(r"(?<![\w*\\])\*(\S(?:[^*]*?\S)?)\*(?![\w*])")
    _FOOTNOTE_REF = re.compile(r"\s*\[(?:#[\w-]*|\d+|\*|[A-Za-z][\w-]*)\]_")
    _SUBSTITUTION = re.compile(r"\|([\w][\w -]*?)\|(?:__?)?")
    _ESCAPE = re.compile(r"\\(.)")

    def __init__(self, labels: dict[str, str], substitutions: dict[str, str]) -> None:
        self.labels = labels
        self.substitutions = substitutions

    def __call__(self, text: str) -> str:
        """Return `text` with markup removed and whitespace collapsed."""
        stash: list[str] = []

        def keep(value: str) -> str:
            # Placeholders protect literal text from the emphasis/escape rules applied afterwards.
            stash.append(value)
            return f"\x00{len(stash) - 1}\x00"

        text = self._LITERAL.sub(lambda m: keep(m.group(1)), text)
        text = self._ROLE.sub(lambda m: keep(self._role(m.group(1), m.group(2))), text)
        text = self._LINK.sub(lambda m: m.group(1) or m.group(2), text)
        text = self._NAMED_REF.sub(lambda m: m.group(1), text)
        text = self._DEFAULT_ROLE.sub(lambda m: m.group(1), text)
        text = self._STRONG.sub(lambda m: m.group(1), text)
        text = self._EMPHASIS.sub(lambda m: m.group(1), text)
        text = self._FOOTNOTE_REF.sub("", text)
        text = self._SUBSTITUTION.sub(lambda m: self.substitutions.get(m.group(1), ""), text)
        text = text.replace("\\ ", "")
        text = self._ESCAPE.sub(lambda m: m.group(1), text)
        text = re.sub(r"\x00(\d+)\x00", lambda m: stash[int(m.group(1))], text)
        return " ".join(text.split())

    def _role(self, role: str, content: str) -> str:
        """Visible text of one interpreted-text role."""
        content = re.sub(r"\\(.)", r"\1", content)  # role text keeps escaped characters, e.g. :kbd:`\\`
        name = role.rsplit(":", 1)[-1].lower()
        titled = re.match(r"^(.*?)\s*<([^<>]*)>$", content, re.S)
        if titled and titled.group(1):
            return " ".join(titled.group(1).split())
        target = titled.group(2) if titled else content
        if name == "pep":
            return "PEP " + target.split("#")[0]
        if name == "rfc":
            return "RFC " + target.split("#")[0]
        if name in ("issue", "gh"):
            # The Python docs render tracker references as "bpo-NNN" / "gh-NNN".
            return ("bpo-" if name == "issue" else "gh-") + target
        if name == "ref":
            title = self.labels.get(target.lower())
            return self(title) if title else target.replace("-", " ")
        if name == "doc":
            return target.rstrip("/").rsplit("/", 1)[-1].replace("-", " ")
        if name == "samp":
            return target.replace("{", "").replace("}", "")
        # "!" suppresses the link and a leading "." asks Sphinx to search; neither is shown.
        target = re.sub(r"^\.(?=\w)", "", target.lstrip("!"))
        if target.startswith("~"):
            return target[1:].rsplit(".", 1)[-1]
        return target
