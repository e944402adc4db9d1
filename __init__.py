"""VideoPure as a ComfyUI custom node pack (this folder goes under ComfyUI/custom_nodes/; see docs/comfyui.md).

ComfyUI imports this file under a module name made from the folder's path, so the pack's own modules are
imported relatively. The library, videopure_core, is the copy in this folder (imported under its own name, so
the library's absolute imports work); an installed copy is used only when this folder has none. Two copies of the
pack in one ComfyUI would share whichever library loaded first, so the second copy refuses to load, naming both.

Outside ComfyUI (no `folder_paths` module) nothing is registered and nothing is imported: pytest, for one,
imports this file as the package of the repository root before it runs any test.
"""

import importlib.util
import os
import sys

WEB_DIRECTORY = "./web"  # the frontend extension: hides the loaders' widgets that the bundled weights do not use
HERE = os.path.dirname(os.path.abspath(__file__))


def _import_library():
    """Import this folder's videopure_core as `videopure_core`, or raise ImportError when another copy is loaded."""
    own = os.path.join(HERE, "videopure_core")
    loaded = sys.modules.get("videopure_core")
    if loaded is not None:
        where = os.path.dirname(os.path.abspath(getattr(loaded, "__file__", None) or "?"))
        if os.path.isdir(own) and os.path.realpath(where) != os.path.realpath(own):
            raise ImportError(
                f"VideoPure is installed twice: this copy ({HERE}) would run the library of the copy at "
                f"{os.path.dirname(where)}, which is already loaded. Remove or disable one of them "
                f"(e.g. rename its folder to end in .disabled) and restart ComfyUI."
            )
        return loaded
    if not os.path.isfile(os.path.join(own, "__init__.py")):
        import videopure_core  # noqa: F401  (a pack folder without the library: the installed one)

        return sys.modules["videopure_core"]
    spec = importlib.util.spec_from_file_location("videopure_core", os.path.join(own, "__init__.py"),
                                                  submodule_search_locations=[own])
    module = importlib.util.module_from_spec(spec)
    sys.modules["videopure_core"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["videopure_core"]
        raise
    return module


try:
    import folder_paths  # noqa: F401  (a ComfyUI module: present only when ComfyUI loads the pack)
except ImportError:
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}
else:
    _import_library()

    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
    from .nodes.bridge import install_sample_video, register_model_folders

    register_model_folders()
    install_sample_video()  # the input of the video template (example_workflows/), if ComfyUI's input lacks it

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
