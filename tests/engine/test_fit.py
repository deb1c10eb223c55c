"""Linear-fit engine: the book's numbers, CSV errors, divergence, stop, split, MLP, race."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from engine.fit.choices import INPUT_SCALE_RANGE, LR_RANGE
from engine.fit.data import (
    BOOK_T_C,
    BOOK_T_U,
    FitData,
    _split_index_arrays,
    book_data,
    load_csv,
    parse_csv_text,
    split_indices,
)
from engine.fit.surface import (
    RaceSession,
    contour_segments,
    loss_surface,
    race_job,
    session_surface,
)
from engine.fit.trainer import FitConfig, FitSession, fit_job
from engine.jobs import JobContext, JobError

BOOK_GD = {"model": "linear", "optimizer": "gd", "lr": 1e-2, "epochs": 5000, "input_scale": 0.1}
BOOK_ADAM = {"model": "linear", "optimizer": "adam", "lr": 1e-1, "epochs": 2000, "input_scale": 1}


def test_book_gradient_descent_reproduces_chapter_5() -> None:
    updates = []
    result = fit_job(BOOK_GD, JobContext(progress=updates.append))
    assert result["status"] == "done"
    assert result["epochs"] == 5000
    assert round(result["params"]["w"], 4) == 5.3671
    assert round(result["params"]["b"], 4) == -17.3012
    assert result["train_loss"] == pytest.approx(2.927648, abs=2e-6)
    assert result["val_loss"] is None and result["n_train"] == 11
    # one live update per epoch, plain floats, ending at the returned parameters
    epochs = [u for u in updates if u["kind"] == "epoch"]
    assert [u["epoch"] for u in epochs] == list(range(1, 5001))
    assert epochs[0]["train_loss"] == pytest.approx(80.364342, rel=1e-6)  # the book's epoch 1
    assert all(type(epochs[-1][k]) is float for k in ("train_loss", "w", "b", "grad_w", "grad_b"))
    assert epochs[-1]["w"] == result["params"]["w"]


def test_book_adam_on_unscaled_inputs() -> None:
    result = fit_job(BOOK_ADAM, JobContext())
    assert result["status"] == "done"
    assert round(result["params"]["w"], 4) == 0.5367
    assert round(result["params"]["b"], 4) == -17.3021


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_every_optimizer_lowers_the_loss(optimizer: str) -> None:
    lr = 0.1 if optimizer == "adam" else 1e-2
    result = fit_job({**BOOK_GD, "optimizer": optimizer, "lr": lr, "epochs": 300}, JobContext())
    assert result["status"] == "done"
    assert result["train_loss"] < 80.364342 / 5


def test_sgd_is_the_book_gd_through_torch_optim() -> None:
    gd = fit_job({**BOOK_GD, "epochs": 200}, JobContext())
    sgd = fit_job({**BOOK_GD, "epochs": 200, "optimizer": "sgd"}, JobContext())
    assert sgd["params"]["w"] == pytest.approx(gd["params"]["w"], rel=1e-6)


def test_stepping_matches_one_long_run() -> None:
    session = FitSession(FitConfig(epochs=100))
    for _ in range(40):
        session.step(1)
    assert session.status == "paused"
    session.step(60)
    assert session.status == "done" and session.epoch == 100
    whole = fit_job({**BOOK_GD, "epochs": 100}, JobContext())
    assert session.param_dict() == whole["params"]


def test_divergence_on_unscaled_inputs_explains_and_suggests() -> None:
    updates = []
    result = fit_job({**BOOK_GD, "input_scale": 1.0}, JobContext(progress=updates.append))
    assert result["status"] == "diverged"
    assert result["epochs"] < 10
    message = result["message"]
    assert "diverged at epoch" in message and "learning rate" in message
    assert "input scale" in message and "\n" not in message
    assert updates[-1]["kind"] == "diverged"


def test_a_run_that_ends_far_above_its_start_diverged() -> None:
    # lr 0.033 grows the loss ~340,000-fold over 5000 epochs: below the explosion limit
    # at every epoch, and no fit at the end
    updates = []
    result = fit_job({**BOOK_GD, "lr": 0.033}, JobContext(progress=updates.append))
    assert result["status"] == "diverged" and updates[-1]["kind"] == "diverged"
    # the message's loss is the final one, not the last epoch's (before its update)
    assert f"the loss after its update exploded from 80.36 to {result['train_loss']:.4g}." \
        in result["message"]
    assert fit_job({**BOOK_GD, "lr": 0.02}, JobContext())["status"] == "done"
    # a first guess already on the line starts near 0: Adam's small wander is no divergence
    on_the_line = FitData((86.0, 64.0, 52.0, 27.0, 31.0), (8.6, 6.4, 5.2, 2.7, 3.1))
    near = fit_job({"model": "linear", "optimizer": "adam", "lr": 0.01, "epochs": 10,
                    "input_scale": 0.1, "data": on_the_line}, JobContext())
    assert near["status"] == "done" and near["train_loss"] < 0.01


# every learning rate or input scale a message suggests
SUGGESTED_VALUES = re.compile(r"learning rate \(try ([^)]+)\)|input scale ([-+.e\d]+)")


@pytest.mark.parametrize("config", [
    {**BOOK_GD, "input_scale": 1.0},
    # x in the tens of thousands: input scale 1e-05 (once more than the tab could hold)
    {**BOOK_GD, "data": FitData((12000.0, 25000.0, 40000.0, 51000.0), (27.0, 53.0, 83.0, 105.0))},
    {**BOOK_GD, "lr": LR_RANGE[0], "input_scale": INPUT_SCALE_RANGE[0],
     "data": FitData((1e30, 3e30), (2.0, 4.0))},  # nothing smaller to try
    {**BOOK_GD, "lr": 1e30},  # the CLI takes any learning rate; the advice stays in range
    {**BOOK_GD, "optimizer": "adam", "lr": 1e30},
])
def test_divergence_advice_is_a_value_the_tab_can_hold(config: dict) -> None:
    message = fit_job(config, JobContext())["message"]
    suggested = SUGGESTED_VALUES.findall(message)
    for lr, scale in suggested:
        if lr:
            assert LR_RANGE[0] <= float(lr) <= LR_RANGE[1], message
        else:
            assert INPUT_SCALE_RANGE[0] <= float(scale) <= INPUT_SCALE_RANGE[1], message
    if config["lr"] == LR_RANGE[0]:
        assert not suggested and "divide x by 1e+30 in the data" in message


def test_x_too_large_for_any_input_scale_the_tab_holds_names_the_cli_scale_that_fits() -> None:
    huge_x = {"x": [1e38, 2e38, 3e38], "y": [1.0, 2.0, 3.0]}
    message = fit_job({**BOOK_GD, "data": huge_x}, JobContext())["message"]
    assert "divide x by 1e+38 in the data" in message
    match = re.search(r"--input-scale (\S+) does the same; the tab's Input scale goes down to "
                      r"1e-12 only", message)
    assert match, message
    followed = fit_job({**BOOK_GD, "data": huge_x, "epochs": 20,
                        "input_scale": float(match.group(1))}, JobContext())
    assert followed["status"] == "done" and followed["train_loss"] < 10


@pytest.mark.parametrize("optimizer", ["gd", "adam"])
def test_data_too_large_for_float32_is_not_blamed_on_the_learning_rate(optimizer: str) -> None:
    # y² overflows float32 at the starting parameters, before any step
    huge_y = FitData((1.0, 3.0), (1e30, 4e30))
    result = fit_job({**BOOK_GD, "optimizer": optimizer, "data": huge_y}, JobContext())
    assert result["status"] == "diverged" and result["epochs"] == 1
    message = result["message"]
    assert message.startswith("Training cannot start: the loss is infinite at the starting")
    assert "too large for a float32 squared error" in message
    assert "divide y by 1e+30" in message and "learning rate" not in message.lower()
    race = race_job({**BOOK_GD, "data": huge_y}, JobContext())
    assert race["status"] == "diverged" and race["message"] == message


def test_inputs_and_curves_stay_within_float32() -> None:
    with pytest.raises(JobError, match="makes the inputs too large for float32"):
        FitSession(FitConfig(input_scale=1e39))
    huge = FitSession(FitConfig(), FitData((3e38, -3e38), (4.0, 4.0)))
    assert all(math.isfinite(x) for x in huge.curve_x)


def test_nan_loss_is_divergence() -> None:
    # a learning rate so large that the first update overflows to inf, then NaN
    result = fit_job({**BOOK_GD, "lr": 1e38, "input_scale": 1.0}, JobContext())
    assert result["status"] == "diverged"
    assert result["params"]["w"] is None or math.isfinite(result["params"]["w"])


def test_stop_request_returns_what_it_has() -> None:
    ctx = JobContext()

    def stop_after_50(update: dict) -> None:
        if update.get("epoch") == 50:
            ctx.request_stop()

    ctx._progress = stop_after_50
    result = fit_job(BOOK_GD, ctx)
    assert result["status"] == "stopped"
    assert result["epochs"] == 50
    assert result["params"]["w"] is not None


def test_validation_split_is_seeded_and_book_sized() -> None:
    train, val = split_indices(11, 0.2, seed=3)
    assert len(train) == 9 and len(val) == 2  # the book: n_val = int(0.2 * n_samples)
    assert sorted(train + val) == list(range(11))
    assert split_indices(11, 0.2, seed=3) == (train, val)
    assert split_indices(11, 0.2, seed=4) != (train, val)
    assert split_indices(11, 0.0, seed=3) == (list(range(11)), [])
    with pytest.raises(JobError, match="train"):
        split_indices(3, 0.7, seed=0)


@pytest.mark.parametrize(("n_points", "val_fraction", "seed"),
                         [(11, 0.2, 0), (11, 0.2, 3), (1000, 0.5, 7), (200_000, 0.2, 12345)])
def test_validation_split_is_torchs_seeded_randperm_in_data_order(
        n_points: int, val_fraction: float, seed: int) -> None:
    import torch

    n_val = int(val_fraction * n_points)
    shuffled = torch.randperm(n_points, generator=torch.Generator().manual_seed(seed))
    expected = (shuffled[:n_points - n_val].sort().values.tolist(),
                shuffled[n_points - n_val:].sort().values.tolist())
    assert split_indices(n_points, val_fraction, seed) == expected


def test_validation_split_sorts_without_torchs_thread_pool(monkeypatch) -> None:
    # the GUI splits on its own thread, where torch's sort of 200k indices took up to 0.7 s
    import torch

    def refuse(*_args, **_kwargs):
        raise AssertionError("torch sort on the GUI thread")

    monkeypatch.setattr(torch.Tensor, "sort", refuse)
    monkeypatch.setattr(torch, "sort", refuse)
    _split_index_arrays.cache_clear()  # split now, not found among the last splits
    train, val = split_indices(1000, 0.3, seed=1)
    assert len(val) == 300 and sorted(train + val) == list(range(1000))
    assert train == sorted(train) and val == sorted(val)


def test_a_new_run_on_the_same_points_reuses_their_split(monkeypatch) -> None:
    """Another learning rate or optimizer splits the same way: 2M points are not shuffled
    again on the GUI thread for each change of a setting."""
    import torch

    _split_index_arrays.cache_clear()
    shuffles = []
    real_randperm = torch.randperm
    monkeypatch.setattr(torch, "randperm",
                        lambda *args, **kwargs: shuffles.append(args) or real_randperm(
                            *args, **kwargs))
    data = FitData(tuple(np.linspace(0, 50, 400)), tuple(np.linspace(0, 50, 400) * 0.5 - 3))
    first = FitSession(FitConfig(model="linear", val_fraction=0.2, seed=1, lr=1e-3), data)
    second = FitSession(FitConfig(model="linear", val_fraction=0.2, seed=1, lr=1e-2,
                                  optimizer="adam"), data)
    assert len(shuffles) == 1
    assert second.val_indices is first.val_indices and len(first.val_indices) == 80
    assert not first.train_indices.flags.writeable  # shared: no session may change it
    FitSession(FitConfig(model="linear", val_fraction=0.2, seed=2), data)  # another seed
    assert len(shuffles) == 2


@pytest.fixture
def meta_device(monkeypatch) -> str:
    """torch's "meta" device as a stand-in GPU: tensors go there without one (holding no
    values, so nothing can train there)."""
    from engine.fit import trainer

    real = trainer.resolve_device
    monkeypatch.setattr(trainer, "resolve_device",
                        lambda name: "meta" if name == "meta" else real(name))
    return "meta"


def _session_devices(session: FitSession) -> set[str]:
    tensors = [session.x_train, session.y_train, session.x_val, session.y_val,
               *session.model.parameters()]
    return {t.device.type for t in tensors}


@pytest.mark.parametrize("model", ["linear", "mlp"])
def test_a_session_stays_on_the_cpu_until_its_job_moves_it(meta_device, monkeypatch,
                                                           model: str) -> None:
    # the GUI builds sessions on its thread: a GPU's first use there would create its CUDA
    # context (0.3 s to seconds) and freeze the window
    session = FitSession(FitConfig(model=model, val_fraction=0.2), device=meta_device)
    assert session.device.type == "meta" and _session_devices(session) == {"cpu"}
    seen = []
    monkeypatch.setattr(FitSession, "step",
                        lambda self, *a, **k: seen.append(_session_devices(self)) or {})
    monkeypatch.setattr(FitSession, "result", lambda self: {"device": str(self.device)})
    assert fit_job({"session": session}, JobContext(device=meta_device)) == {"device": "meta"}
    assert seen == [{"meta"}]


def test_a_race_stays_on_the_cpu_until_its_job_moves_it(meta_device, monkeypatch) -> None:
    race = RaceSession(FitConfig(val_fraction=0.2), device=meta_device)
    assert race.device.type == "meta"
    assert all(_session_devices(s) == {"cpu"} for s in race.sessions.values())
    seen = []
    monkeypatch.setattr(RaceSession, "step", lambda self, *a, **k: seen.append(
        [_session_devices(s) for s in self.sessions.values()]) or {})
    monkeypatch.setattr(RaceSession, "result", lambda self: {})
    race_job({"session": race}, JobContext(device=meta_device))
    assert seen == [[{"meta"}] * len(race.sessions)]


def test_moving_a_session_moves_its_optimizer_state(meta_device) -> None:
    session = FitSession(FitConfig(optimizer="adam", lr=0.1, epochs=10))
    session.step(3)  # on the CPU: Adam now holds its averages
    session.move_to(meta_device)
    assert session.device.type == "meta" and _session_devices(session) == {"meta"}
    averages = [v for state in session.optimizer.state.values()
                for key, v in state.items() if key != "step"]
    assert averages and {v.device.type for v in averages} == {"meta"}


@pytest.mark.parametrize(("optimizer", "optimizer_class"), [("sgd", "SGD"),
                                                           ("momentum", "SGD"),
                                                           ("adam", "Adam")])
def test_a_session_makes_its_optimizer_on_its_jobs_thread(monkeypatch, optimizer: str,
                                                          optimizer_class: str) -> None:
    # torch.optim's first optimizer imports torch._dynamo (~2 s): not on the GUI thread
    import threading

    import torch

    made_on = []
    cls = getattr(torch.optim, optimizer_class)
    real_init = cls.__init__

    def recording_init(self, *args, **kwargs):
        made_on.append(threading.current_thread())
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(cls, "__init__", recording_init)
    session = FitSession(FitConfig(optimizer=optimizer, lr=0.01, epochs=3))
    assert made_on == []
    worker = threading.Thread(target=fit_job, args=({"session": session}, JobContext()))
    worker.start()
    worker.join()
    assert made_on == [worker] and session.status == "done"


def test_a_session_trains_where_it_is_built_without_a_job() -> None:
    session = FitSession(FitConfig(epochs=5))
    session.step(5)
    assert session.placed_on == session.device and session.status == "done"


def test_mlp_overfits_with_validation() -> None:
    config = {"model": "mlp", "hidden": 13, "optimizer": "adam", "lr": 1e-2, "epochs": 600,
              "input_scale": 0.1, "val_fraction": 0.3, "seed": 0}
    updates = []
    result = fit_job(config, JobContext(progress=updates.append))
    assert result["status"] == "done"
    assert result["val_loss"] is not None and result["n_val"] == 3
    assert result["train_loss"] < 3.0
    # the overfitting story: validation bottoms out while training keeps improving
    assert result["best_val_epoch"] < 600
    assert result["val_loss"] > result["best_val_loss"]
    snapshots = [u for u in updates if u["kind"] == "snapshot"]
    assert snapshots and len(snapshots[-1]["curve_y"]) == len(snapshots[-1]["curve_x"])
    assert sum(len(v) if isinstance(v, list) else 1 for v in result["params"].values()) >= 4


def _lowest_val(updates: list[dict]) -> tuple[int, float]:
    """(epoch, val loss) of the first lowest validation loss among the epoch updates."""
    epochs = [u for u in updates if u["kind"] == "epoch"]
    best = min(epochs, key=lambda u: u["val_loss"])  # min keeps the first of equal ones
    return best["epoch"], best["val_loss"]


@pytest.mark.parametrize("config", [
    # validation improves to the very end: the final parameters are the best
    {**BOOK_GD, "epochs": 10, "val_fraction": 0.2, "seed": 2**63 - 1},
    # validation bottoms out early and rises again
    {"model": "mlp", "optimizer": "adam", "lr": 1e-2, "epochs": 300, "val_fraction": 0.3},
])
def test_lowest_validation_loss_is_one_of_the_epochs_shown_however_the_run_is_paused(
        config: dict) -> None:
    updates = []
    result = fit_job(config, JobContext(progress=updates.append))
    best = (result["best_val_epoch"], result["best_val_loss"])
    assert best == _lowest_val(updates)
    last = [u for u in updates if u["kind"] == "epoch"][-1]
    assert result["val_loss"] == last["val_loss"]  # the final parameters are the last epoch's
    # the tab's Step and Pause ask for a result in between: the same parameters, same label
    session = FitSession(FitConfig.from_dict(config))
    stepped = []
    for _ in range(config["epochs"]):
        session.step(1, on_epoch=stepped.append)
        session.result()
    result_stepped = session.result()
    assert (result_stepped["best_val_epoch"], result_stepped["best_val_loss"]) == best
    assert _lowest_val(stepped) == best


def test_lowest_validation_loss_at_the_end_is_the_last_epoch() -> None:
    result = fit_job({**BOOK_GD, "epochs": 10, "val_fraction": 0.2, "seed": 2**63 - 1},
                     JobContext())
    assert (result["best_val_epoch"], result["best_val_loss"]) == (10, result["val_loss"])
    overfit = fit_job({"model": "mlp", "optimizer": "adam", "lr": 1e-2, "epochs": 600,
                       "val_fraction": 0.3}, JobContext())
    assert overfit["best_val_loss"] < overfit["val_loss"] and overfit["best_val_epoch"] < 600


def plain_torch_fit(optimizer: str, lr: float, epochs: int, scale: float, val_fraction: float,
                    seed: int) -> tuple[float, float, float, float, float]:
    """The book's loop with torch.optim and a randperm split, written out plainly: the last
    epoch's (train loss, val loss after the update, w, b) and the train loss at that w, b."""
    import torch

    t_u, t_c = scale * torch.tensor(BOOK_T_U), torch.tensor(BOOK_T_C)
    n_val = max(1, int(val_fraction * len(t_u)))
    shuffled = torch.randperm(len(t_u), generator=torch.Generator().manual_seed(seed))
    train, val = shuffled[:-n_val].sort().values, shuffled[-n_val:].sort().values
    params = torch.tensor([1.0, 0.0], requires_grad=True)
    make = {"sgd": lambda: torch.optim.SGD([params], lr=lr),
            "momentum": lambda: torch.optim.SGD([params], lr=lr, momentum=0.9),
            "adam": lambda: torch.optim.Adam([params], lr=lr)}
    optim = make[optimizer]()
    for _ in range(epochs):
        train_loss = ((params[0] * t_u[train] + params[1] - t_c[train]) ** 2).mean()
        optim.zero_grad()
        train_loss.backward()
        optim.step()
        with torch.no_grad():
            val_loss = ((params[0] * t_u[val] + params[1] - t_c[val]) ** 2).mean()
        final_train = ((params[0] * t_u[train] + params[1] - t_c[train]) ** 2).mean()
    return (train_loss.item(), val_loss.item(), params[0].item(), params[1].item(),
            final_train.item())


@pytest.mark.parametrize("optimizer, lr", [("sgd", 1e-2), ("momentum", 1e-3), ("adam", 1e-1)])
def test_each_epoch_matches_a_plain_pytorch_loop(optimizer: str, lr: float) -> None:
    updates = []
    fit_job({"optimizer": optimizer, "lr": lr, "epochs": 500, "input_scale": 0.1,
             "val_fraction": 0.2, "seed": 7}, JobContext(progress=updates.append))
    last = [u for u in updates if u["kind"] == "epoch"][-1]
    assert (last["train_loss"], last["val_loss"], last["w"], last["b"]) == \
        plain_torch_fit(optimizer, lr, 500, 0.1, 0.2, 7)[:4]


def test_mlp_activation_and_seed_are_used() -> None:
    a = FitSession(FitConfig(model="mlp", activation="relu", seed=1))
    b = FitSession(FitConfig(model="mlp", activation="relu", seed=1))
    c = FitSession(FitConfig(model="mlp", activation="relu", seed=2))
    assert type(a.model[1]).__name__ == "ReLU"
    assert a.param_dict() == b.param_dict() != c.param_dict()


@pytest.mark.parametrize("bad, match", [
    ({"optimizer": "lbfgs"}, "unknown optimizer"),
    ({"lr": -1}, "learning rate"),
    ({"input_scale": 0}, "input scale"),
    ({"val_fraction": 1.5}, "validation fraction"),
    ({"model": "mlp", "activation": "swish"}, "unknown activation"),
    ({"epochs": "many"}, "bad fit settings"),
])
def test_bad_settings_are_job_errors(bad: dict, match: str) -> None:
    with pytest.raises(JobError, match=match):
        fit_job({**BOOK_GD, **bad}, JobContext())


def test_custom_data_fits_exactly() -> None:
    data = FitData((0.0, 1.0, 2.0, 3.0), (1.0, 3.0, 5.0, 7.0), "line")
    result = fit_job({"data": data, "optimizer": "adam", "lr": 0.1, "epochs": 2000,
                      "input_scale": 1.0}, JobContext())
    assert result["params"]["w"] == pytest.approx(2.0, abs=1e-3)
    assert result["params"]["b"] == pytest.approx(1.0, abs=1e-3)


# --- CSV loading -----------------------------------------------------------------------------

def test_csv_with_and_without_header(tmp_path) -> None:
    with_header = tmp_path / "a.csv"
    with_header.write_text("t_u,t_c\n35.7,0.5\n55.9, 14\n\n# comment\n58.2,15\n")
    data = load_csv(with_header)
    assert data.x == (35.7, 55.9, 58.2) and data.y == (0.5, 14.0, 15.0)
    assert parse_csv_text("1;2\n3;4\n").x == (1.0, 3.0)
    assert parse_csv_text("1\t2\n3\t4\n").y == (2.0, 4.0)
    # a comma in a comment does not make a semicolon file comma-separated
    assert parse_csv_text("# t_u, t_c\n1;2\n3;4\n").y == (2.0, 4.0)
    assert parse_csv_text("x,y\r1,2\r3,4\r").x == (1.0, 3.0)  # old Mac line ends
    # semicolons on every line: commas are decimal commas, as European spreadsheets save
    european = parse_csv_text("x;y\n1,5;2\n3;4,25\n")
    assert european.x == (1.5, 3.0) and european.y == (2.0, 4.25)
    assert parse_csv_text('"1,5";2\n3;4\n').x == (1.5, 3.0)


@pytest.mark.parametrize("text, match", [
    ("x,y\n1,2\n3,abc\n", r"line 3: 'abc' is not a number"),
    ("1,2\n3\n", r"line 2: expected 2 columns x,y but found 1"),
    ("1\n2\n3\n", r"line 1: expected 2 columns x,y but found 1"),
    ("1,2\n3,nan\n", r"line 2: 'nan' is not a finite number"),
    ("1,2\ninf,4\n", r"line 2: 'inf' is not a finite number"),
    ("1,2\n3,1e300\n", r"line 2: '1e300' is too large"),
    ("", r"is empty"),
    ("\n# only a comment\n", r"is empty"),
    ("x,y\n\n", r"bad.csv has a header but no x,y rows"),
    ("t_u;t_c\n# none yet\n", r"has a header but no x,y rows"),
    ("1,2\n", r"at least 2"),
])
def test_bad_csv_names_the_line(tmp_path, text: str, match: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(JobError, match=match):
        load_csv(path)


def test_binary_file_is_refused(tmp_path) -> None:
    path = tmp_path / "photo.csv"
    path.write_bytes(b"1,2\n3,4\n\x89PNG\x00\x01\x02")
    with pytest.raises(JobError, match=r"photo.csv line 3: binary data"):
        load_csv(path)
    # not UTF-8 is read as Windows-1252 text: the cell, not the encoding, is what is wrong
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"1,2\n\xe9\xe8,4\n")
    with pytest.raises(JobError, match=r"latin.csv line 2: 'éè' is not a number"):
        load_csv(latin)


def test_binary_file_with_nul_bytes_is_refused_as_binary(tmp_path) -> None:
    png = tmp_path / "image.csv"  # a PNG renamed: NUL bytes without a UTF-16 byte-order mark
    png.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00")
    with pytest.raises(JobError, match=r"image.csv line 3: binary data, not a text CSV"):
        load_csv(png)
    # binary behind a UTF-16 byte-order mark still reads as binary, not as a bad number
    marked = tmp_path / "marked.csv"
    marked.write_bytes("1\t2\n".encode("utf-16-le").join([b"\xff\xfe", b"\x00\x00\x07\x00"]))
    with pytest.raises(JobError, match=r"marked.csv line 2: binary data"):
        load_csv(marked)


def test_excel_windows_csv_with_a_cp1252_header(tmp_path) -> None:
    path = tmp_path / "cp1252.csv"
    path.write_bytes("Température;Valeur\n1,5;2,3\n2,5;4,1\n".encode("cp1252"))
    data = load_csv(path)
    assert data.x == (1.5, 2.5) and data.y == (2.3, 4.1)
    # bytes that cp1252 leaves undefined (0x81, 0x9d) fall back to Latin-1
    odd = tmp_path / "odd.csv"
    odd.write_bytes(b"\x81x,\x9dy\n1,2\n3,4\n")
    assert load_csv(odd).y == (2.0, 4.0)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_excel_unicode_text_is_utf16_with_tabs_and_decimal_commas(tmp_path,
                                                                   encoding: str) -> None:
    text = "Température\tValeur\r\n1,5\t2,25\r\n3\t4\r\n"
    bom = {"utf-16-le": b"\xff\xfe", "utf-16-be": b"\xfe\xff"}.get(encoding, b"")
    path = tmp_path / "unicode.csv"
    path.write_bytes(bom + text.encode(encoding))  # "utf-16": the machine's order with its BOM
    data = load_csv(path)
    assert data.x == (1.5, 3.0) and data.y == (2.25, 4.0)
    bad = tmp_path / "bad16.csv"
    bad.write_bytes("x\ty\n1\t2\n3\tabc\n".encode("utf-16"))
    with pytest.raises(JobError, match=r"bad16.csv line 3: 'abc' is not a number"):
        load_csv(bad)


def test_tab_separated_with_decimal_commas(tmp_path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(b"1,5\t2\n3,5\t4\n")
    data = load_csv(path)
    assert data.x == (1.5, 3.5) and data.y == (2.0, 4.0)
    assert parse_csv_text("x\ty\n1,5\t2,25\n3\t4\n").y == (2.25, 4.0)
    assert parse_csv_text('"1,5"\t2\r\n3\t4,5\r\n').x == (1.5, 3.0)
    # commas that already split every line into x,y numbers stay separators
    assert parse_csv_text("1.5,\t2\n3,\t4\n").x == (1.5, 3.0)
    assert parse_csv_text("1\t,5\n3\t,4\n").y == (5.0, 4.0)
    # a bad cell is named as the tab reading sees it, on its own line
    with pytest.raises(JobError, match=r"line 2: 'abc' is not a number"):
        parse_csv_text("1,5\t2\n3,5\tabc\n")
    with pytest.raises(JobError, match=r"line 1: 'abc' is not a number"):
        parse_csv_text("1,5\tabc\n3,5\t4\n")
    with pytest.raises(JobError, match=r"line 3: 'bad' is not a number"):
        parse_csv_text("x,\ty\n1.5,\t2.5\n3,\tbad\n")


def test_a_long_bad_cell_is_shown_cut_short() -> None:
    with pytest.raises(JobError, match=r"line 2: 'a{40}'\.\.\. is not a number$"):
        parse_csv_text("1,2\n3," + "a" * 5000 + "\n")


def test_missing_file(tmp_path) -> None:
    with pytest.raises(JobError, match="no such file"):
        load_csv(tmp_path / "nope.csv")


def test_point_editing_keeps_data_immutable() -> None:
    data = book_data()
    added = data.with_point(40.0, 2.0)
    assert len(added) == 12 and len(data) == 11
    assert added.without_point(11) == data
    assert added.without_point(0).x == data.x[1:] + (40.0,)
    with pytest.raises(IndexError):
        data.without_point(11)  # no silent copy for a point that is not there
    x, y = added.arrays
    assert x.tolist() == list(added.x) and y.tolist() == list(added.y)
    assert not x.flags.writeable  # shared by every session of these data


def test_an_edited_copy_takes_its_arrays_from_the_original() -> None:
    # a click on 2M points: two array copies, not 4M floats converted again (~150 ms)
    data = FitData(tuple(float(i) for i in range(10)), tuple(float(i * i) for i in range(10)))
    data.arrays  # noqa: B018
    for edited in (data.with_point(40.0, 2.0), data.without_point(3),
                   data.without_point(3).with_point(1.0, 1.0)):
        assert "arrays" in edited.__dict__  # made already
        x, y = edited.arrays
        assert x.tolist() == list(edited.x) and y.tolist() == list(edited.y)
        assert not x.flags.writeable and not y.flags.writeable


@pytest.mark.parametrize("scale", [0.1, 1 / 3, 1e-5, 123.456])
@pytest.mark.parametrize("val_fraction", [0.0, 0.3])
def test_session_inputs_are_torchs_float32_products(scale: float, val_fraction: float) -> None:
    import torch

    xs = tuple(math.sin(i) * 10.0 ** (i % 7) for i in range(500))
    data = FitData(xs, tuple(range(500)))
    session = FitSession(FitConfig(input_scale=scale, val_fraction=val_fraction), data)
    scaled = scale * torch.tensor(xs, dtype=torch.float32)  # as the book writes it
    train = torch.tensor(session.train_indices, dtype=torch.long)
    val = torch.tensor(session.val_indices, dtype=torch.long)
    assert torch.equal(session.x_train, scaled[train])
    assert torch.equal(session.x_val, scaled[val])
    assert torch.equal(session.y_train, torch.tensor(data.y, dtype=torch.float32)[train])


# --- loss surface and race -------------------------------------------------------------------

def test_loss_surface_has_its_minimum_at_the_least_squares_fit() -> None:
    session = FitSession(FitConfig())
    surface = session_surface(session, resolution=81)
    loss = surface["loss"]
    assert loss.shape == (81, 81)
    opt = surface["optimum"]
    assert opt["w"] == pytest.approx(5.3677, abs=1e-3) and opt["b"] == pytest.approx(-17.305, 1e-3)
    assert loss.min() >= opt["loss"] - 1e-9
    w, b = surface["w"], surface["b"]
    assert w[0] < 1.0 < w[-1] and b[0] < 0.0 < b[-1]  # the start (1, 0) is on the map
    assert w[0] < opt["w"] < w[-1] and b[0] < opt["b"] < b[-1]


@pytest.mark.parametrize("case", ["book", "noisy", "large offset", "constant x", "two points"])
def test_least_squares_from_the_moments_is_lstsqs_fit(monkeypatch, case: str) -> None:
    from engine.fit import surface

    rng = np.random.default_rng(1)
    x = {"book": np.array(BOOK_T_U) * 0.1, "noisy": rng.normal(50.0, 20.0, 5000),
         "large offset": 1e6 + rng.normal(0.0, 1.0, 1000), "constant x": np.full(7, 3.5),
         "two points": np.array([1.0, 2.0])}[case]
    y = np.array(BOOK_T_C) if case == "book" else 0.5 * x - 17.0 + rng.normal(0.0, 3.0, len(x))
    design = np.stack([x, np.ones_like(x)], axis=1)
    (w, b), *_ = np.linalg.lstsq(design, y, rcond=None)
    # numpy's lstsq on 2M points took ~0.1 s of every click and setting change (twice)
    monkeypatch.setattr(np.linalg, "lstsq", lambda *a, **k: pytest.fail("lstsq called"))
    fit_w, fit_b = surface.least_squares(x, y)
    assert fit_w == pytest.approx(w, rel=1e-6, abs=1e-9)
    assert fit_b == pytest.approx(b, rel=1e-6, abs=1e-6)
    optimum = surface.loss_surface(x, y, resolution=5)["optimum"]
    assert optimum["loss"] == pytest.approx(np.mean((w * x + b - y) ** 2), rel=1e-6, abs=1e-9)


def test_loss_surface_values() -> None:
    import numpy as np

    x, y = np.array([0.0, 1.0]), np.array([0.0, 2.0])
    surface = loss_surface(x, y, (0.0, 2.0, -1.0, 1.0), resolution=3)
    assert surface["loss"][2, 1] == pytest.approx(0.0)  # w = 2, b = 0 fits exactly
    assert surface["loss"][0, 1] == pytest.approx(2.0)  # w = 0, b = 0: mean(0, 4)


def test_loss_surface_matches_the_direct_sum_and_scales_to_large_data() -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(50.0, 20.0, 500)
    y = 0.5 * x - 17.0 + rng.normal(0.0, 3.0, 500)
    bounds = (-1.0, 2.0, -30.0, 10.0)
    surface = loss_surface(x, y, bounds, resolution=21)
    w, b = surface["w"], surface["b"]
    direct = np.mean((w[:, None, None] * x + b[None, :, None] - y) ** 2, axis=2)
    np.testing.assert_allclose(surface["loss"], direct, rtol=1e-9)
    # 400,000 points: a grid's worth of work, not grid x points (that would need ~47 GB)
    big = np.tile(x, 800)
    assert loss_surface(big, np.tile(y, 800), bounds, resolution=121)["loss"].shape == (121, 121)


def test_race_from_the_same_start() -> None:
    updates = []
    result = race_job({"lr": 1e-2, "epochs": 400, "input_scale": 0.1},
                      JobContext(progress=updates.append))
    assert result["status"] == "done" and result["epochs"] == 400
    assert set(result["racers"]) == {"gd", "momentum", "adam"}
    assert result["leader"] == "momentum"
    first = updates[0]["racers"]
    assert first["gd"]["train_loss"] == first["momentum"]["train_loss"] \
        == first["adam"]["train_loss"]  # same start, same data
    assert len(updates) == 400


def test_race_drops_diverged_racers_and_continues() -> None:
    session = RaceSession(FitConfig(lr=1e-2, epochs=50, input_scale=1.0))
    updates = []
    session.step(50, on_epoch=updates.append)
    result = session.result()
    assert result["racers"]["gd"]["status"] == "diverged"
    assert result["racers"]["adam"]["status"] == "done"
    assert result["leader"] == "adam"
    assert any("gd" in u.get("diverged", {}) for u in updates)
    assert set(updates[-1]["racers"]) == {"adam"}


def test_race_reports_each_racers_validation_loss() -> None:
    updates = []
    result = race_job({"lr": 1e-2, "epochs": 30, "input_scale": 0.1, "val_fraction": 0.2},
                      JobContext(progress=updates.append))
    assert all(set(racer) == {"train_loss", "val_loss", "w", "b"}
               for u in updates for racer in u["racers"].values())
    assert all(r["val_loss"] is not None and r["n_val"] == 2 for r in result["racers"].values())


def _singletons(value) -> bool:
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, dict):
        return any(_singletons(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_singletons(v) for v in value)
    return False


@pytest.mark.parametrize("config", [
    {**BOOK_GD, "epochs": 20},
    {**BOOK_GD, "epochs": 20, "input_scale": 1.0},  # diverges
    {"model": "mlp", "epochs": 20, "val_fraction": 0.2, "optimizer": "adam", "lr": 0.01},
])
def test_progress_updates_hold_no_none_or_bools(config: dict) -> None:
    # PySide6 6.12's Signal(list) loses a reference to None/True/False each time it carries one
    updates = []
    fit_job(config, JobContext(progress=updates.append))
    race_job({**config, "epochs": 20}, JobContext(progress=updates.append))
    assert updates and not any(_singletons(u) for u in updates)


def test_contour_segments_lie_on_their_level_and_close_up() -> None:
    xs, ys = np.linspace(-2, 2, 81), np.linspace(-1.5, 2.5, 61)
    values = xs[:, None] ** 2 + ys[None, :] ** 2
    x, y = contour_segments(values, xs, ys, [0.3, 1.0, 100.0])  # 100: off the grid
    radius2 = x**2 + y**2
    on_small = np.abs(radius2 - 0.3) < 0.01
    assert len(x) % 2 == 0 and (on_small | (np.abs(radius2 - 1.0) < 0.01)).all()
    assert 0 < on_small.sum() < len(x)  # both circles, nothing for the level off the grid
    # closed loops: every segment end is another segment's start
    ends, counts = np.unique(np.round(np.stack([x, y], axis=1), 9), axis=0, return_counts=True)
    assert len(ends) == len(x) // 2 and (counts == 2).all()
    assert contour_segments(values, xs, ys, [])[0].size == 0


@pytest.mark.parametrize("level", [-0.001, 0.001])
def test_contour_saddles_cut_off_the_corners_unlike_the_centre(level: float) -> None:
    grid = np.linspace(-1.05, 1.05, 22)  # the origin mid-cell: a saddle cell for |level| < h²
    x, y = contour_segments(grid[:, None] * grid[None, :], grid, grid, [level])
    assert len(x) > 0 and np.allclose(x * y, level, atol=0.003)
    # x * y = level never crosses an axis: both ends of each segment in one quadrant
    ends_x, ends_y = np.sign(x).reshape(-1, 2), np.sign(y).reshape(-1, 2)
    assert (ends_x[:, 0] == ends_x[:, 1]).all() and (ends_y[:, 0] == ends_y[:, 1]).all()
