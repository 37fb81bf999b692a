"""``patchalign3d app``: a Gradio web app (extra ``[app]``).

Upload a mesh or point cloud (or pick a bundled example), type part names, see the parts in a 3D viewer and
download the parts GLB, ``parts.json`` and ``.npz``. It exposes an API endpoint named ``segment`` (a shape
file and comma-separated part names -> the parts GLB) for ``gradio_client``.

``segmenter.py`` does the work and knows nothing of Gradio; ``ui.py`` lays out the page; ``main.py`` is the
command line.
"""

from patchalign3d.app.segmenter import AppInputError, AppLimits, AppResult, AppSegmenter

__all__ = ["AppInputError", "AppLimits", "AppResult", "AppSegmenter"]
