// VideoPure's frontend extension (ComfyUI loads every .js under the pack's WEB_DIRECTORY, ./web): the RAFT and
// classifier loaders hide `arch` / `num_classes` while the bundled small world is selected (they are not used then),
// and the loaders hide `keep_loaded`, which is ignored.
import { app } from "../../scripts/app.js";
import { LOADERS, watchLoaderWidgets } from "./videopure_loaders.js";

app.registerExtension({
  name: "videopure.loaders",
  nodeCreated(node) {
    if (LOADERS.includes(node.comfyClass)) watchLoaderWidgets(node);
  },
});
