"""The stages of loading a model, for its progress and for where a stop is obeyed.

Most of a big model's load runs in calls nobody can interrupt: importing torchvision, building
the network (ViT-H/14: 633 M parameters), ``torch.load`` of its 2.5 GB of weights, the warm-up
forward. :class:`LoadStages` goes between them: each stage is reported as it begins, and a stop
asked for during one raises :class:`~engine.jobs.JobStopped` as soon as it ends, before the next
begins (the warm-up's forward checks at each layer too), so nothing half-loaded is kept.
"""

from __future__ import annotations

from collections.abc import Callable

from engine.jobs import JobStopped

#: What each stage does, as the progress says it ("Loading ViT-H/14: building the network…").
STAGE_TEXTS = {
    "import": "importing torchvision",
    "weights": "finding its weights",
    "read": "reading its weights",
    "build": "building the network",
    "fit": "putting the weights in the network",
    "hub": "loading it from Torch Hub",
    "device": "putting it on the device",
    "optimize": "optimizing it for the CPU",
    "warm_up": "warming it up with a first run",
}


class LoadStages:
    """Reports ``{"event": "loading", "model": title, "stage", "text"}`` as each stage of a
    load begins; ``should_stop()`` is asked between stages (see the module's docstring)."""

    def __init__(
        self,
        title: str,
        progress: Callable[[dict], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        self.title = title
        self._progress = progress
        self._should_stop = should_stop
        self.current: str | None = None  # the text of the stage under way

    def begin(self, stage: str, text: str | None = None) -> None:
        """End the stage under way (raising :class:`JobStopped` if a stop was asked for
        during it), then report ``stage`` as begun."""
        self.check()
        self.current = text or STAGE_TEXTS[stage]
        if self._progress is not None:
            self._progress({"event": "loading", "model": self.title, "stage": stage,
                            "text": self.current})

    def check(self) -> None:
        """Raise :class:`JobStopped`, saying what was stopped, if a stop was asked for."""
        if self._should_stop is not None and self._should_stop():
            during = f" ({self.current})" if self.current else ""
            raise JobStopped(f"stopped loading {self.title}{during}; nothing of it was kept")
