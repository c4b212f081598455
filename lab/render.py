"""HTML for token views: self-contained markup with inline styles, no scripts, no external assets.

Used by the tokenizer tab and usable in a notebook (``IPython.display.HTML(render.token_columns(...))``).
"""

from __future__ import annotations

import html
from collections.abc import Callable

from lab.tokens import Boundaries, ChatRendering, Tokenization, describe_char

# The book's show_tokens colours (chapter 2 notebook), cycled over the tokens.
BOOK_COLOURS = ["102,194,165", "252,141,98", "141,160,203", "231,138,195", "166,216,84", "255,217,47"]

STYLE = """
<style>
.lab-tok{font-family:ui-sans-serif,system-ui,sans-serif;color:#1f2328}
.lab-tok .cols{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:12px}
.lab-tok .col{border:1px solid #d0d7de;border-radius:8px;padding:10px;background:#fff}
.lab-tok .col.unavailable{background:#fff8f0;border-color:#f0b37e}
.lab-tok h3{margin:0 0 2px 0;font-size:15px}
.lab-tok .hub{font-family:ui-monospace,monospace;font-size:11px;color:#57606a}
.lab-tok .stats{font-size:12px;color:#57606a;margin:4px 0}
.lab-tok .note{font-size:12px;margin:4px 0 8px 0;color:#24292f}
.lab-tok .src{font-size:11px;color:#57606a}
.lab-tok .toks{font-family:ui-monospace,monospace;font-size:13px;line-height:1.9}
.lab-tok .t{display:inline-block;white-space:pre;min-width:4px;border-radius:3px;padding:0 1px;
  margin:1px 1px 1px 0;unicode-bidi:isolate;color:#111;line-height:1.5}
.lab-tok .t.special{outline:2px solid #cf222e;font-weight:600}
.lab-tok .t.byte{font-size:11px;font-style:italic}
.lab-tok .t.unk{outline:2px dashed #8250df}
.lab-tok .id{display:inline-block;font-size:9px;color:#424a53;vertical-align:sub;margin-left:1px}
.lab-tok .ws{color:#424a53}
.lab-tok .ctl{color:#744500;font-size:10px}
.lab-tok .decoded{font-size:12px;color:#57606a;margin:0 4px 0 1px}
.lab-tok .why{font-size:12px;white-space:pre-wrap}
.lab-tok .text{font-family:ui-monospace,monospace;font-size:14px;line-height:2.1;white-space:pre-wrap;
  word-break:break-all}
.lab-tok .cut{display:inline-block;width:2px;height:1.2em;vertical-align:middle;margin:0 1px}
.lab-tok .cut.both{background:#8c959f}.lab-tok .cut.a{background:#0969da}.lab-tok .cut.b{background:#d1242f}
.lab-tok .legend span{margin-right:12px;font-size:12px}
.lab-tok table.stats-table{border-collapse:collapse;font-size:12px;width:100%}
.lab-tok .stats-table th,.lab-tok .stats-table td{border-bottom:1px solid #d0d7de;padding:3px 6px;
  text-align:left}
.lab-tok .stats-table td.num{text-align:right;font-variant-numeric:tabular-nums}
</style>
"""

_WHITESPACE = {" ": "·", "\t": "→", "\n": "↵", "\r": "␍"}


def _visible(text: str, show_whitespace: bool) -> str:
    """Escape text for HTML, making whitespace (on request) and invisible characters visible."""
    out = []
    for char in text:
        code = ord(char)
        if char in _WHITESPACE:
            if show_whitespace:
                out.append(f'<span class="ws">{_WHITESPACE[char]}</span>')
            elif char != "\n":  # the line break itself is drawn after the token (see _line_breaks)
                out.append(html.escape(char))
        elif code < 0x20 or code == 0x7F:
            out.append(f'<span class="ctl">{chr(0x2400 + code) if code < 0x20 else "␡"}</span>')
        elif (
            char in "\u200b\u200c\u200d\u2060\ufeff\u200e\u200f\u00ad"
            or 0x202A <= code <= 0x202E
            or 0x2066 <= code <= 0x2069
        ):
            out.append(f'<span class="ctl">⟨{describe_char(char)}⟩</span>')
        else:
            out.append(html.escape(char))
    return "".join(out)


def _token_spans(result: Tokenization, show_ids: bool, show_whitespace: bool) -> str:
    special = set(result.special_tokens)
    parts = []
    for index, (token, token_id) in enumerate(zip(result.tokens, result.ids)):
        colour = BOOK_COLOURS[index % len(BOOK_COLOURS)]
        classes = ["t", f"c{index % len(BOOK_COLOURS)}"]  # cN: the colour-blind-safe palette's Nth colour
        piece = result.pieces[index] if index < len(result.pieces) else None
        hover = f"id {token_id}"
        if piece is not None:
            classes.append("byte")
            label = html.escape(f"<{piece.hex}>")
            hover += f" · bytes {piece.hex}, part of {piece.part_of!r}"
        elif token == "":
            label = "∅"
            hover += " · decodes to nothing on its own"
        else:
            label = _visible(token, show_whitespace)
        if token in special:
            classes.append("special")
            hover += " · special token"
        if result.unknown and token in special and "unk" in token.lower():
            classes.append("unk")
            hover += " (unknown: the text is not in the vocabulary)"
        ids = f'<span class="id">{token_id}</span>' if show_ids else ""
        parts.append(
            f'<span class="{" ".join(classes)}" style="background:rgba({colour},0.55)" '
            f'title="{html.escape(hover)}" dir="ltr">{label}{ids}</span>'
            f"{_decoded_after(result, index)}{_line_breaks(token)}"
        )
    return "".join(parts)


def _decoded_after(result: Tokenization, index: int) -> str:
    """After the last byte piece of a character, show the character those pieces decode to together."""
    piece = result.pieces[index] if index < len(result.pieces) else None
    if piece is None:
        return ""
    following = result.pieces[index + 1] if index + 1 < len(result.pieces) else None
    if following is not None and following.part_of == piece.part_of:
        return ""
    hint = "the byte pieces before this decode to it"
    return f'<span class="decoded" title="{hint}">={html.escape(piece.part_of)}</span>'


def _line_breaks(token: str) -> str:
    """Tokens are inline blocks, so a token holding newlines is followed by the line breaks it makes."""
    return "<br>" * token.count("\n")


def _stats(result: Tokenization, text: str) -> str:
    cpt = result.chars_per_token(text)
    bits = [
        f"{len(result.ids):,} tokens",
        f"{cpt} chars/token" if cpt else "– chars/token",
        f"vocab {result.vocab_size:,}" if result.vocab_size else "",
        result.method,
    ]
    added = result.added_special
    bits.append(f"added: {' '.join(added)}" if added else "no special tokens added")
    if result.unknown:
        bits.append(f"{result.unknown} unknown")
    return " · ".join(html.escape(b) for b in bits if b)


def token_column(
    result: Tokenization,
    text: str,
    *,
    show_ids: bool = False,
    show_whitespace: bool = True,
    follow: str | None = None,
) -> str:
    """One tokenizer's column: header, stats, the book's note and the coloured tokens.

    ``follow`` is a link (``?tab=attention&…``) that the header offers and that a click on any token
    opens: the same text in the attention tab with a model of this tokenizer's family."""
    link = (
        f'<a class="lab-follow" href="{html.escape(follow)}" '
        f'aria-label="Open this text in the attention tab with a model of the {html.escape(result.name)} '
        'family">attention ↗</a>'
        if follow and not result.pending and not result.error
        else ""
    )
    head = (
        f"<h3>{html.escape(result.title or result.name)}{link}</h3>"
        f'<div class="hub">{html.escape(result.name)}</div>'
    )
    if result.pending:
        return (
            f'<div class="col pending" data-tokenizer="{html.escape(result.name)}">{head}'
            '<div class="stats">Downloading from the Hugging Face Hub…</div>'
            '<div class="why">The other columns are ready; this one fills in when it arrives.</div>'
            "</div>"
        )
    if result.error:
        return (
            f'<div class="col unavailable" data-tokenizer="{html.escape(result.name)}">{head}'
            f'<div class="stats">Not available here</div><div class="why">{html.escape(result.error)}</div>'
            "</div>"
        )
    note = f'<div class="note">{html.escape(result.note)}</div>' if result.note else ""
    data = f' data-follow="{html.escape(follow)}"' if follow else ""
    return (
        f'<div class="col" data-tokenizer="{html.escape(result.name)}"{data}>{head}'
        f'<div class="stats">{_stats(result, text)}</div>{note}'
        f'<div class="toks">{_token_spans(result, show_ids, show_whitespace)}</div>'
        f'<div class="src">{html.escape(result.source)}</div></div>'
    )


def token_columns(
    results: list[Tokenization],
    text: str,
    *,
    show_ids: bool = False,
    show_whitespace: bool = True,
    notes: list[str] | None = None,
    follow: Callable[[str], str | None] | None = None,
) -> str:
    """Every tokenizer's column in a responsive grid (``follow``: a tokenizer's name -> its column's link)."""
    banner = "".join(f'<div class="note">⚠ {html.escape(n)}</div>' for n in notes or [])
    columns = "".join(
        token_column(
            r,
            text,
            show_ids=show_ids,
            show_whitespace=show_whitespace,
            follow=follow(r.name) if follow else None,
        )
        for r in results
    )
    return f'{STYLE}<div class="lab-tok">{banner}<div class="cols">{columns}</div></div>'


def boundaries_view(text: str, a: Tokenization, b: Tokenization, cuts: Boundaries) -> str:
    """The text with a mark wherever a tokenizer starts a token: grey both, blue only A, red only B."""
    marks = {i: "both" for i in cuts.both} | {i: "a" for i in cuts.only_a} | {i: "b" for i in cuts.only_b}
    out = []
    for index, char in enumerate(text):
        if index in marks:
            out.append(f'<span class="cut {marks[index]}"></span>')
        out.append(_visible(char, True) + _line_breaks(char))
    legend = (
        f'<div class="legend"><span><span class="cut both"></span> both ({len(cuts.both)})</span>'
        f"{_legend_item('a', a, cuts.only_a)}{_legend_item('b', b, cuts.only_b)}</div>"
    )
    return f'{STYLE}<div class="lab-tok">{legend}<div class="text">{"".join(out)}</div></div>'


def _legend_item(mark: str, result: Tokenization, positions: list[int]) -> str:
    name = html.escape(result.title or result.name)
    return f'<span><span class="cut {mark}"></span> only {name} ({len(positions)})</span>'


def chat_view(rendering: ChatRendering, *, show_whitespace: bool = True) -> str:
    """A chat-templated conversation as tokens, special tokens outlined in red."""
    parts = []
    for index, (token, token_id, special) in enumerate(
        zip(rendering.tokens, rendering.ids, rendering.special)
    ):
        colour = "255,255,255" if special else BOOK_COLOURS[index % len(BOOK_COLOURS)]
        classes = "t special" if special else f"t c{index % len(BOOK_COLOURS)}"
        label = _visible(token, show_whitespace) if token else "∅"
        parts.append(
            f'<span class="{classes}" style="background:rgba({colour},0.45)" '
            f'title="id {token_id}">{label}</span>{_line_breaks(token)}'
        )
    specials = sum(rendering.special)
    return (
        f'{STYLE}<div class="lab-tok"><div class="col" data-tokenizer="{html.escape(rendering.name)}">'
        f"<h3>{html.escape(rendering.name)}</h3>"
        f'<div class="stats">{len(rendering.ids)} tokens, {specials} special</div>'
        f'<div class="toks">{"".join(parts)}</div></div></div>'
    )


def table(headers: list[str], rows: list[list[object]], caption: str = "") -> str:
    """A plain HTML table (numbers right-aligned); ``None`` cells are left blank."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for value in row:
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            text = "" if value is None else (f"{value:,}" if isinstance(value, int) else str(value))
            cells.append(
                f'<td class="num">{html.escape(text)}</td>' if numeric else f"<td>{html.escape(text)}</td>"
            )
        body.append(f"<tr>{''.join(cells)}</tr>")
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return (
        f'{STYLE}<div class="lab-tok"><table class="stats-table">{cap}<thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )
