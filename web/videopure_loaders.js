// Which loader widgets are shown (no ComfyUI imports, so that tests can run it with node): with the bundled small
// world selected, `arch` (and `num_classes`) are not used; `keep_loaded` is never used (ComfyUI manages memory).
// Hidden widgets keep their values and their place, so saved workflows keep their widget order.

export const BUNDLED = "bundled: small world";
export const FILE_ONLY_WIDGETS = {
  VideoPureRAFTLoader: ["arch"],
  VideoPureClassifierLoader: ["arch", "num_classes"],
};
// Widgets kept only so that saved workflows load (their tooltips say they are ignored): always hidden.
export const IGNORED_WIDGETS = ["keep_loaded"];
export const LOADERS = ["VideoPureDiffusionLoader", "VideoPureRAFTLoader", "VideoPureClassifierLoader"];

// Hide a widget (or show it again) in old and new frontends alike: `hidden` for the frontends that honour it, and no
// height for those that lay out hidden widgets anyway (ComfyUI frontend 1.32).
function setHidden(widget, hide) {
  if (Boolean(widget.hidden) === hide) return false;
  widget.hidden = hide;
  if (hide) {
    widget.__videopureComputeSize = widget.computeSize;
    widget.computeSize = () => [0, -4];
  } else {
    widget.computeSize = widget.__videopureComputeSize;
    delete widget.__videopureComputeSize;
    if (!widget.computeSize) delete widget.computeSize;
  }
  return true;
}

// Show or hide a loader's file-only widgets for its current `weights` value; true when something changed. The node
// is then resized to fit (also with `fit`, for a node that a saved workflow just sized for all its widgets).
export function updateLoaderWidgets(node, fit = false) {
  const kind = node.comfyClass ?? node.type;
  if (!LOADERS.includes(kind) || !node.widgets) return false;
  const names = FILE_ONLY_WIDGETS[kind] ?? [];
  const weights = node.widgets.find((w) => w.name === "weights");
  const bundled = weights?.value === BUNDLED;
  let changed = false;
  for (const widget of node.widgets) {
    const hide = IGNORED_WIDGETS.includes(widget.name) || (bundled && names.includes(widget.name));
    changed = setHidden(widget, hide) || changed;
  }
  if ((changed || fit) && node.computeSize && node.setSize) {
    node.setSize([node.size[0], node.computeSize()[1]]);
    node.setDirtyCanvas?.(true, true);
  }
  return changed;
}

// Keep them up to date: when `weights` changes, and when a saved workflow sets the values (after nodeCreated).
export function watchLoaderWidgets(node) {
  if (!LOADERS.includes(node.comfyClass ?? node.type)) return;
  const weights = node.widgets?.find((w) => w.name === "weights");
  if (weights) {
    const callback = weights.callback;
    weights.callback = function (...args) {
      const result = callback?.apply(this, args);
      updateLoaderWidgets(node);
      return result;
    };
  }
  const onConfigure = node.onConfigure;
  node.onConfigure = function (...args) {
    const result = onConfigure?.apply(this, args);
    updateLoaderWidgets(node, true);
    return result;
  };
  updateLoaderWidgets(node);
}
