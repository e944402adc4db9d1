// VideoPure's frontend extension (ComfyUI loads every .js under the pack's WEB_DIRECTORY, ./web).
// The RAFT and classifier loaders have widgets that only matter for weights files: with the bundled small world
// selected, `arch` (and `num_classes`) are not used, so they are hidden; they come back when a file is picked.
// Hidden widgets keep their values and their place, so saved workflows keep their widget order.
import { app } from "../../scripts/app.js";

export const BUNDLED = "bundled: small world";
export const FILE_ONLY_WIDGETS = {
  VideoPureRAFTLoader: ["arch"],
  VideoPureClassifierLoader: ["arch", "num_classes"],
};

// Show or hide a loader's file-only widgets for its current `weights` value; true when something changed.
export function updateLoaderWidgets(node) {
  const names = FILE_ONLY_WIDGETS[node.comfyClass ?? node.type];
  const weights = node.widgets?.find((w) => w.name === "weights");
  if (!names || !weights) return false;
  const hide = weights.value === BUNDLED;
  let changed = false;
  for (const widget of node.widgets) {
    if (names.includes(widget.name) && Boolean(widget.hidden) !== hide) {
      widget.hidden = hide;
      changed = true;
    }
  }
  if (changed && node.computeSize && node.setSize) {
    node.setSize([node.size[0], node.computeSize()[1]]);
    node.setDirtyCanvas?.(true, true);
  }
  return changed;
}

function watchWeights(node) {
  const weights = node.widgets?.find((w) => w.name === "weights");
  if (!weights) return;
  const callback = weights.callback;
  weights.callback = function (...args) {
    const result = callback?.apply(this, args);
    updateLoaderWidgets(node);
    return result;
  };
  const onConfigure = node.onConfigure; // a saved workflow sets the widget values after nodeCreated
  node.onConfigure = function (...args) {
    const result = onConfigure?.apply(this, args);
    updateLoaderWidgets(node);
    return result;
  };
  updateLoaderWidgets(node);
}

if (app?.registerExtension) {
  app.registerExtension({
    name: "videopure.loaders",
    nodeCreated(node) {
      if (FILE_ONLY_WIDGETS[node.comfyClass]) watchWeights(node);
    },
  });
}
