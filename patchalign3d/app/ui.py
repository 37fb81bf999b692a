"""The page: Gradio components wired to :class:`~patchalign3d.app.segmenter.AppSegmenter`."""

from __future__ import annotations

import os
from typing import Any

from patchalign3d.app.segmenter import AppInputError, AppSegmenter
from patchalign3d.data.io import SUPPORTED_SUFFIXES
from patchalign3d.model.patchalign3d import ASSIGN_MODES

#: Bundled examples and the names to try on them.
EXAMPLES = {"chair": "seat, back, leg", "airplane": "body, wing, tail, engine", "mug": "handle, cup"}

# No web fonts: the page must look the same on a machine with no network.
_FONTS = dict(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


def build_app(segmenter: AppSegmenter) -> Any:
    """A ``gradio.Blocks`` page; its API endpoint ``segment`` takes a shape file and names, returns the parts GLB."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    from patchalign3d.examples import example_path

    limits = segmenter.limits

    def segment_ui(shape: str | None, names: str, assign: str, num_points: float):
        try:
            result = segmenter.run(shape, names, assign=assign, num_points=int(num_points))
        except AppInputError as err:
            raise gr.Error(str(err)) from None
        return str(result.viewer), [str(p) for p in result.downloads], result.summary

    def segment_api(shape: str | None, names: str) -> str:
        try:
            result = segmenter.run(shape, names)
        except AppInputError as err:
            raise gr.Error(str(err)) from None
        if result.parts_glb is None:
            raise gr.Error("this endpoint returns a parts GLB, which needs a mesh; the file is a point cloud")
        return str(result.parts_glb)

    with gr.Blocks(title="patchalign3d", analytics_enabled=False) as app:
        gr.Markdown("## patchalign3d: name the parts, get them back\n"
                    "Upload a mesh or a point cloud (or pick an example), type the part names, press *Segment*.")
        if segmenter.note:
            gr.Markdown(f"**{segmenter.note}**", elem_id="note")
        with gr.Row():
            with gr.Column():
                shape = gr.File(label=f"shape: a mesh or point cloud, up to {limits.max_upload_mb:g} MB",
                                file_types=list(SUPPORTED_SUFFIXES), elem_id="shape")
                names = gr.Textbox(label="part names, comma-separated", placeholder="seat, back, leg", elem_id="part-names")
                with gr.Accordion("options", open=False):
                    assign = gr.Radio(list(ASSIGN_MODES), value="nearest", label="point to patch assignment")
                    num_points = gr.Slider(256, limits.max_sample_points, value=2048, step=256,
                                           label="points sampled on a mesh's surface")
                run = gr.Button("Segment", variant="primary", elem_id="run")
                gr.Examples([[str(example_path(n)), parts] for n, parts in EXAMPLES.items()], inputs=[shape, names],
                            label="examples")
            with gr.Column():
                viewer = gr.Model3D(label="parts", elem_id="viewer", clear_color=(1.0, 1.0, 1.0, 1.0), height=420)
                summary = gr.Markdown(elem_id="summary")
                downloads = gr.File(label="downloads", file_count="multiple", interactive=False, elem_id="downloads")
        run.click(segment_ui, inputs=[shape, names, assign, num_points], outputs=[viewer, downloads, summary],
                  api_visibility="private")
        # The scripted endpoint: the same inputs as a person types, the parts GLB back.
        api_result = gr.File(visible=False)
        gr.Button(visible=False).click(segment_api, inputs=[shape, names], outputs=[api_result], api_name="segment")
    return app


def launch(app: Any, *, host: str = "127.0.0.1", port: int | None = 7860, max_upload_mb: float = 50.0,
           block: bool = True) -> Any:
    """Serve ``app``; ``block=False`` returns at once (the server runs in a thread; ``app.close()`` stops it)."""
    import gradio as gr

    from patchalign3d.examples import example_path

    return app.launch(
        server_name=host, server_port=port, max_file_size=int(max_upload_mb * 2**20), show_error=True, quiet=not block,
        prevent_thread_lock=not block, allowed_paths=[str(example_path("chair").parent)],
        theme=gr.themes.Default(**_FONTS), footer_links=[],
    )
