"""The "Show the code · download" panel every result has: the Python that reproduces it and its files.

The panel is empty until a result is produced: the handler that makes the result fills it with a snippet
from :mod:`lab.snippets` and the files :mod:`lab.export` writes, so the first page costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

TITLE = "Show the code · download"
FILES_LABEL = "Downloads: figures (PNG, SVG), tables (CSV), the result (JSON)"


@dataclass(frozen=True)
class CodePanel:
    """The two outputs of a panel: the snippet (``gr.Code``) and the downloads (``gr.File``)."""

    code: gr.Code
    files: gr.File

    @property
    def outputs(self) -> list[Any]:
        return [self.code, self.files]

    @staticmethod
    def unchanged() -> tuple[Any, Any]:
        """What a step that has no new result yet sends to the panel (a streamed partial result)."""
        return gr.update(), gr.update()


def code_panel(prefix: str, title: str = TITLE) -> CodePanel:
    """A folded panel: the code and the downloads of one result (ids ``<prefix>-code``, ``-downloads``)."""
    with gr.Accordion(title, open=False, elem_id=f"{prefix}-code-panel"):
        code = gr.Code(
            language="python",
            label="Python that reproduces this result (copy it into a notebook)",
            interactive=False,
            elem_id=f"{prefix}-code",
        )
        files = gr.File(
            label=FILES_LABEL, file_count="multiple", interactive=False, elem_id=f"{prefix}-downloads"
        )
    return CodePanel(code, files)
