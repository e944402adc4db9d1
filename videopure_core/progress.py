"""Progress for the command line: a `callback(stage, step, total)` that drives one tqdm bar per stage."""

from __future__ import annotations

from tqdm.auto import tqdm


class TqdmCallback:
    """Pass as `callback=` to the stages; call `close()` (or use as a context manager) when done."""

    def __init__(self, disable: bool = False, leave: bool = False):
        self.bars: dict[str, tqdm] = {}
        self.disable, self.leave = disable, leave

    def __call__(self, stage: str, step: int, total: int) -> None:
        bar = self.bars.get(stage)
        if bar is None or bar.total != total or step < bar.n:
            if bar is not None:
                bar.close()
            bar = self.bars[stage] = tqdm(total=total, desc=stage, disable=self.disable, leave=self.leave)
        bar.update(step - bar.n)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
