"""A torchrun entry point for the tests: ``train_job`` with a config from the command line,
stopped (on rank 0's request, which every rank then obeys) after a given global step.

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/engine/ddp_worker.py \
        CONFIG_JSON STOP_AFTER_STEP RESULT_JSON        (STOP_AFTER_STEP 0: never stop)
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from engine.cifar.trainer import train_job  # noqa: E402
from engine.jobs import JobContext  # noqa: E402


def main() -> None:
    config, stop_after, out = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    ctx = JobContext("cpu")

    def progress(update):
        if stop_after and update.get("phase") == "train" and update["global_step"] == stop_after:
            ctx.request_stop()

    ctx._progress = progress
    result = train_job({**config, "report_interval_s": 0}, ctx)
    if os.environ.get("RANK") == "0":
        Path(out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
