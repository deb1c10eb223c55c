"""A model's load, past its download and check, is reported stage by stage (importing
torchvision, reading the weights, building the network, …, the warm-up), and a stop asked for
during any stage is obeyed when that stage ends: nothing half-loaded is kept, and the reason says
what was stopped. The weights are SqueezeNet 1.1's shapes with random values (no network)."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from engine.classify import jobs, weights
from engine.classify.load_stages import LoadStages
from engine.jobs import JobContext, JobError

TORCHVISION_STAGES = ["import", "read", "build", "fit", "device", "optimize", "warm_up"]
CACHED_COPY_STAGES = ["import", "weights", *TORCHVISION_STAGES[1:]]
DEFAULT_MODEL_STAGES = ["build", "device", "optimize", "warm_up"]


@pytest.fixture(scope="module")
def squeezenet_state() -> dict:
    from torchvision.models import squeezenet1_1

    torch.manual_seed(0)
    return squeezenet1_1().state_dict()


@pytest.fixture
def own_weights_file(tmp_path, squeezenet_state) -> str:
    path = tmp_path / "my-squeezenet.pth"
    torch.save(squeezenet_state, path)
    return str(path)


@pytest.fixture
def cached_weights(tmp_path, monkeypatch, squeezenet_state):
    """SqueezeNet 1.1's weights file in the cache, already noted as checked (so no download or
    check runs: only the load's own stages)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("TORCHDESK_CACHE_DIR", str(tmp_path / "cache"))
    copy = weights.checkpoint_dir() / "squeezenet1_1-b8a52dc0.pth"
    copy.parent.mkdir(parents=True)
    torch.save(squeezenet_state, copy)
    weights._remember_verified(copy)
    return copy


def _load(config: dict, stop_at: str | None = None) -> tuple[dict, list[dict]]:
    """Run the load job; a stop is asked for as the stage ``stop_at`` begins (as if the user
    pressed Esc during it). Its outcome and its reports."""
    jobs.forget_cached_model()  # a model kept from before would be reused: no load, no stages
    updates: list[dict] = []
    ctx = JobContext()

    def report(update: dict) -> None:
        updates.append(update)
        if update["event"] == "loading" and update["stage"] == stop_at:
            ctx.request_stop()

    ctx._progress = report
    return jobs.load_model_job(config, ctx), updates


def _stages(updates: list[dict]) -> list[str]:
    return [u["stage"] for u in updates if u["event"] == "loading"]


CASES = {
    "own weights file": ({"model": "squeezenet1_1"}, TORCHVISION_STAGES,
                         "SqueezeNet 1.1 ← my-squeezenet.pth"),
    "cached torchvision weights": ({"model": "squeezenet1_1"}, CACHED_COPY_STAGES,
                                   "SqueezeNet 1.1"),
    "offline default": ({"model": "efficientnet_lite0"}, DEFAULT_MODEL_STAGES,
                        "EfficientNet-Lite0 (offline default)"),
}


def _case(request, name: str) -> tuple[dict, list[str], str]:
    config, stages, title = CASES[name]
    if name == "own weights file":
        config = {**config, "weights_file": request.getfixturevalue("own_weights_file")}
    elif name == "cached torchvision weights":
        request.getfixturevalue("cached_weights")
    return config, stages, title


@pytest.mark.parametrize("name", CASES)
def test_a_load_reports_its_stages_in_order(request, name):
    config, expected, title = _case(request, name)
    outcome, updates = _load(config)
    assert outcome["status"] == "done"
    assert _stages(updates) == expected
    assert {u["model"] for u in updates if u["event"] == "loading"} == {title}
    assert updates[-1]["event"] == "model"  # the model is announced after its last stage


@pytest.mark.parametrize(("name", "stage"), [
    *(("own weights file", stage) for stage in TORCHVISION_STAGES),
    ("cached torchvision weights", "weights"),
    *(("offline default", stage) for stage in DEFAULT_MODEL_STAGES),
])
def test_a_stop_during_a_stage_ends_the_load_when_it_ends(request, name, stage):
    config, expected, title = _case(request, name)
    outcome, updates = _load(config, stop_at=stage)
    assert outcome["status"] == "stopped"
    stage_text = [u["text"] for u in updates if u["event"] == "loading"][-1]
    assert outcome["reason"] == f"stopped loading {title} ({stage_text}); nothing of it was kept"
    assert _stages(updates) == expected[:expected.index(stage) + 1]  # no stage after it began
    assert not any(u["event"] == "model" for u in updates)
    assert jobs._cached is None  # nothing half-loaded kept for the next job

    outcome, updates = _load(config)  # the next load starts afresh and completes
    assert outcome["status"] == "done" and _stages(updates) == expected


def test_a_stop_during_the_warm_up_forward_ends_it_at_the_next_layer(own_weights_file,
                                                                     monkeypatch):
    """The warm-up forward of a big net takes seconds (ViT-L/16: 4.6 s on 2 cores): a stop
    during it is obeyed at the next layer, not at its end."""
    real_conv_forward = torch.nn.Conv2d.forward
    convs_run = []
    stops = []
    ctx = JobContext()

    def stop_during_the_second_conv(self, x):
        convs_run.append(self)
        if len(convs_run) == 2 and not stops:
            stops.append(ctx)
            ctx.request_stop()  # the user presses Esc while the forward runs
        return real_conv_forward(self, x)

    monkeypatch.setattr(torch.nn.Conv2d, "forward", stop_during_the_second_conv)
    jobs.forget_cached_model()
    config = {"model": "squeezenet1_1", "weights_file": own_weights_file,
              "optimize": False}  # the Python model, as nets over 100 M parameters run
    outcome = jobs.load_model_job(config, ctx)
    assert outcome == {"status": "stopped", "reason": "stopped loading SqueezeNet 1.1 ← "
                       "my-squeezenet.pth (warming it up with a first run); nothing of it was "
                       "kept"}
    assert len(convs_run) == 2  # of its 26: the forward went no further
    assert jobs._cached is None

    convs_run.clear()  # the next load (no stop) runs the whole forward
    assert jobs.load_model_job(config, JobContext())["status"] == "done"
    assert len(convs_run) == 26
    kept = jobs._cached[1].model
    assert not any(module._forward_pre_hooks for module in kept.modules())  # none left behind


def test_reading_the_weights_says_their_size(own_weights_file):
    _, updates = _load({"model": "squeezenet1_1", "weights_file": own_weights_file},
                       stop_at="read")
    size_mb = os.path.getsize(own_weights_file) / 1024 / 1024
    assert [u["text"] for u in updates if u["event"] == "loading"][-1] == \
        f"reading its weights ({size_mb:.1f} MB)"


def test_cli_first_ctrl_c_while_building_the_network_stops_the_load(own_weights_file, tmp_path,
                                                                    monkeypatch, capsys):
    """`python -m engine classify --model squeezenet1_1 --weights FILE`: Ctrl-C while the
    network is built stops once it is built (exit 130), saying so, with no traceback."""
    from PIL import Image

    from engine.cli import main

    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (64, 48), "green").save(photo)
    real_begin = LoadStages.begin
    begun = []

    def ctrl_c_while_building(self, stage, text=None):
        real_begin(self, stage, text)
        begun.append(stage)
        if stage == "build":
            os.kill(os.getpid(), signal.SIGINT)  # the user presses Ctrl-C

    monkeypatch.setattr(LoadStages, "begin", ctrl_c_while_building)
    code = main(["classify", str(photo), "--model", "squeezenet1_1", "--weights",
                 own_weights_file])
    out, err = capsys.readouterr()
    assert code == 130 and out == ""
    assert ("stopped loading SqueezeNet 1.1 ← my-squeezenet.pth (building the network); "
            "nothing of it was kept") in err
    assert "Traceback" not in err
    assert begun == ["import", "read", "build"]


def _run(config: dict, stop_at: str | None = None) -> tuple[dict | None, list[dict]]:
    """Like :func:`_load` without forgetting the kept model; a JobError's outcome is None."""
    updates: list[dict] = []
    ctx = JobContext()

    def report(update: dict) -> None:
        updates.append(update)
        if update["event"] == "loading" and update["stage"] == stop_at:
            ctx.request_stop()

    ctx._progress = report
    try:
        return jobs.load_model_job(config, ctx), updates
    except JobError:
        return None, updates


def test_a_load_stopped_or_failed_keeps_the_model_in_use(own_weights_file, tmp_path):
    """Going back to the model in use after a stopped or failed load of another costs no load
    of it again (ViT-L/16: seconds)."""
    in_use = {"model": "squeezenet1_1", "weights_file": own_weights_file, "optimize": False}
    jobs.forget_cached_model()
    assert _run(in_use)[0]["status"] == "done"
    kept = jobs._cached[1]
    stopped, _ = _run({"model": "efficientnet_lite0", "optimize": False}, stop_at="build")
    assert stopped["status"] == "stopped"
    not_weights = tmp_path / "not-weights.pth"
    not_weights.write_text("not a checkpoint")
    failed, _ = _run({"model": "squeezenet1_1", "weights_file": str(not_weights)})
    assert failed is None
    outcome, updates = _run(in_use)
    assert outcome["status"] == "done" and jobs._cached[1] is kept
    assert _stages(updates) == []  # nothing loaded again
    assert updates[-1]["cached"] is True


def test_a_gpu_without_room_for_a_second_model_frees_the_kept_one_first(monkeypatch):
    free = {"bytes": 0}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (free["bytes"], 80 * 1024**3))
    assert not jobs._room_for_two_models("cuda:0", "cuda:0")
    free["bytes"] = jobs.GPU_ROOM_FOR_A_SECOND_MODEL
    assert jobs._room_for_two_models("cuda:0", "cuda:0")
    free["bytes"] = 0
    assert jobs._room_for_two_models("cuda:0", "cuda:1")  # another GPU: room enough
    assert jobs._room_for_two_models("cpu", "cpu")
