"""The page address as the lab's shareable state: what each tab registers, and the one event that applies
a link (on page load, and when a link inside the page is followed).

Each tab calls :func:`share` with the widgets its link parameters fill (names as in
:data:`lab.links.SCHEME`) and gets back a ``gr.State`` that changes only when a link names that tab: the
tab wires its own computation to that change, through its usual model-queue event, so a page opened
without a link does no work beyond reading its query. Writing the address is client-side only
(:func:`sync_js`, ``assets/js/lab.js``): ``history.replaceState`` after the tab's own events.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import gradio as gr

from lab import catalog, links, paths
from lab.config import Settings
from tabs.common import PRIVATE, warn

LAB_JS = paths.JS / "lab.js"
LAB_CSS = paths.ASSETS / "lab.css"

PALETTE_TOGGLE = (
    '<label class="lab-palette-toggle"><input type="checkbox" id="lab-palette"> '
    "Colour-blind-safe colours (Okabe–Ito and Paul Tol palettes; remembered on this computer)</label>"
)

Restore = Callable[[Any], Any]  # a link value -> the widget's update


class Arrival(NamedTuple):
    """A tab view's link: ``state`` holds its checked values (an input for handlers), ``ready`` is the
    trigger to wire the view's computation to (``on(arrival.ready, compute, [..., arrival.state], ...)``)."""

    state: gr.State
    ready: Callable[..., Any]


def _arrived(link: dict[str, Any] | None) -> None:
    """Let the view's computation run only for a link (a state change to nothing is no link)."""
    if not link:
        raise gr.Error("no link", visible=False, print_exception=False)


@dataclass
class _Part:
    """One registered view of a tab: the parameters it reads, the widgets they fill, its state."""

    tab: str
    names: tuple[str, ...]
    widgets: dict[str, tuple[gr.components.Component, Restore]]
    arrived: gr.State
    on_load: bool  # the state changes on every page load, link or not (the tab draws its first view then)


@dataclass
class _Page:
    parts: list[_Part] = field(default_factory=list)


def _page(demo: gr.Blocks) -> _Page:
    """The link registry of one page (kept on the page itself: several pages may live in one process)."""
    page = getattr(demo, "_lab_links", None)
    if page is None:
        page = _Page()
        demo._lab_links = page  # type: ignore[attr-defined]
    return page


def share(
    demo: gr.Blocks,
    tab: str,
    widgets: dict[str, gr.components.Component | tuple[gr.components.Component, Restore]],
    *,
    extra: tuple[str, ...] = (),
    on_load: bool = False,
) -> Arrival:
    """Register a view of ``tab``: each link parameter in ``widgets`` fills its widget
    (``gr.update(value=…)``, or the given function's update); those in ``extra`` fill none (the tab reads
    them from the state). Returns the state that takes the tab's checked link values (a dict, with a fresh
    ``"#"`` counter so that the same link followed twice runs twice) when a link names any of these
    parameters, and on every page load too where ``on_load`` (a view drawn at load, after the link), with the
    trigger that fires then.
    A tab may register several views (the attention tab: attention, neighbours, logit lens)."""
    assert tab in links.SCHEME, tab
    unknown = (set(widgets) | set(extra)) - set(links.SCHEME[tab])
    assert not unknown, f"not in lab.links.SCHEME[{tab!r}]: {unknown}"
    restored = {
        name: widget if isinstance(widget, tuple) else (widget, _value) for name, widget in widgets.items()
    }
    arrived = gr.State(None)
    _page(demo).parts.append(_Part(tab, (*widgets, *extra), restored, arrived, on_load))
    return Arrival(arrived, ready(arrived))


def ready(state: gr.State) -> Callable[..., Any]:
    """The trigger that fires when ``state`` changes to a value (a link), not when it changes to nothing."""
    return state.change(_arrived, state, None, show_progress="hidden", **PRIVATE).success


def _value(value: Any) -> Any:
    return gr.update(value=value)


def sync_js(tab: str, names: list[str]) -> str:
    """A client-side handler that writes ``names`` (the event's inputs, in order) into the page address as
    ``tab``'s view. No server round trip."""
    call = f"window.labLinks.write({json.dumps(tab)}, {json.dumps(names)}, values)"
    return f"(...values) => {{ window.labLinks && {call}; }}"


def head() -> str:
    """The page's ``<head>`` additions: the lab's client code and styles (no CDN: read from assets/)."""
    kinds = {tab: {name: p.kind for name, p in params.items()} for tab, params in links.SCHEME.items()}
    return (
        f"<style>{LAB_CSS.read_text(encoding='utf-8')}</style>"
        f"<script>window.labLinkScheme = {json.dumps(kinds)};</script>"
        f"<script>{LAB_JS.read_text(encoding='utf-8')}</script>"
    )


def palette_toggle() -> None:
    """The colour-blind-safe palette switch (its state lives in the browser's localStorage)."""
    gr.HTML(PALETTE_TOGGLE, elem_id="lab-palette-box", padding=False)


def wire(demo: gr.Blocks, tab_items: dict[str, gr.Tab], settings: Settings) -> None:
    """Apply links on page load and on following a link inside the page; keep ``tab=`` in the address.

    The tab a link names is selected in the browser (``assets/js/lab.js``), at once."""
    page = _page(demo)
    query = gr.Textbox(visible="hidden", elem_id="lab-link-query")
    go = gr.Button("Open the link", visible="hidden", elem_id="lab-link-go")
    widgets = [w for part in page.parts for w, _ in part.widgets.values()]
    states = [part.arrived for part in page.parts]
    outputs = [*widgets, *states]
    counter = itertools.count(1)

    def allowed(model_id: str) -> bool:
        return not settings.classroom or catalog.is_known(model_id)

    def apply(search: str | None, loading: bool = False) -> list[Any]:
        """Inputs: the page's query string. Outputs: every linked widget, every tab's
        link state (changed only for the tabs the link names, and on ``loading`` for the ``on_load`` ones)."""
        link = links.decode(search or "", max_text_chars=settings.max_text_chars, allowed=allowed)
        if link.problems:
            warn("Parts of this link were left out: " + " ".join(link.problems))
        updates: list[Any] = []
        for part in page.parts:
            values = link.of(part.tab)
            for name, (_, restore) in part.widgets.items():
                updates.append(restore(values[name]) if name in values else gr.skip())
        for part in page.parts:
            values = link.of(part.tab)
            changed = any(name in values for name in part.names) or (loading and part.on_load)
            updates.append({**values, "#": next(counter)} if changed else gr.skip())
        return updates

    def load(search: str | None) -> list[Any]:
        """Inputs and outputs: those of :func:`apply`, when the page is opened."""
        return apply(search, loading=True)

    # The address as the page was opened or the link followed (lab.js keeps it: a tab drawn before the
    # answer comes rewrites the address with its defaults); once the answer is in, the tabs write it again.
    read_query = "(q) => window.labLinks ? window.labLinks.query() : window.location.search"
    applied = "() => { window.labLinks && window.labLinks.applied(); }"
    opened = demo.load(load, query, outputs, js=read_query, **PRIVATE)
    followed = go.click(apply, query, outputs, js=read_query, **PRIVATE)
    for event in (opened, followed):
        event.then(None, None, None, js=applied, **PRIVATE)
    for tab_id, item in tab_items.items():
        item.select(
            None, None, None, js=f"() => window.labLinks && window.labLinks.tab({json.dumps(tab_id)})"
        )
