"""VideoPure's ComfyUI nodes. The pack's top-level __init__.py registers these mappings with ComfyUI.

Modules: bridge (ComfyUI devices, progress, model folders, IMAGE batches), types (the custom socket values),
loaders, data (video sources), stages (the composable stages of Algorithm 1), pipeline (the one-node version),
outputs (vote, classify, flow picture, PGD attack).
"""

from . import data, loaders, outputs, pipeline, stages

_MODULES = (loaders, data, stages, pipeline, outputs)

NODE_CLASS_MAPPINGS = {name: cls for m in _MODULES for name, cls in m.NODE_CLASS_MAPPINGS.items()}
NODE_DISPLAY_NAME_MAPPINGS = {name: title for m in _MODULES for name, title in m.NODE_DISPLAY_NAME_MAPPINGS.items()}
