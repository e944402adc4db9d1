"""VideoPure as a ComfyUI custom node pack (this folder goes under ComfyUI/custom_nodes/; see docs/comfyui.md).

ComfyUI imports this file under a module name made from the folder's path, so the pack's own modules are
imported relatively; the library, videopure_core, is imported by name: installed (`pip install -e .`), or else
found next to this file.

Outside ComfyUI (no `folder_paths` module) nothing is registered and nothing is imported: pytest, for one,
imports this file as the package of the repository root before it runs any test.
"""

import os
import sys

try:
    import folder_paths  # noqa: F401  (a ComfyUI module: present only when ComfyUI loads the pack)
except ImportError:
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}
else:
    try:
        import videopure_core  # noqa: F401
    except ImportError:  # the pack folder is the repository: the library sits next to this file
        sys.path.append(os.path.dirname(os.path.abspath(__file__)))
        import videopure_core  # noqa: F401

    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
    from .nodes.bridge import register_model_folders

    register_model_folders()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
