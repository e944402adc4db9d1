"""VideoPure's bundled ComfyUI workflows: build.py writes them, graph.py is the UI-graph builder it uses."""
