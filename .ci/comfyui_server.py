"""Kept for old references: the ComfyUI server helper now lives in videopure_core/comfy_client.py."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from videopure_core.comfy_client import *  # noqa: E402,F401,F403
from videopure_core.comfy_client import ComfyUIServer, PromptRejected, WebSocket, free_port  # noqa: E402,F401
