"""Checkpoints: safetensors + metadata + weights-only training state, atomic saves, keep-last/best, clear errors."""

from __future__ import annotations

import builtins
import json
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from conftest import subprocess_env, tiny_config, write_yaml
from seqlab import cli
from seqlab.config import ConfigError, config_from_dict
from seqlab.models import build_model
from seqlab.registry import TASKS
from seqlab.training import Trainer
from seqlab.training import checkpoint as ckpt

SECTIONS = {"train": {"steps": 20, "checkpoint": {"every": 5, "keep_last": 2}, "eval_every": 5}}


def trained_run(run: Path, **sections) -> Trainer:
    trainer = Trainer(config_from_dict(tiny_config(**(sections or SECTIONS))), out_dir=run)
    trainer.fit()
    return trainer


def fresh_model(config_data: dict) -> torch.nn.Module:
    config = config_from_dict(config_data)
    return build_model(config.model, TASKS.build(config.task, config.seed).info)


def test_a_run_keeps_the_last_k_and_the_best(tmp_path: Path):
    run = tmp_path / "run"
    trainer = trained_run(run)
    folder = run / "checkpoints"
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step_00000015", "step_00000020"]
    assert sorted(p.name for p in folder.iterdir()) == ["best", "step_00000015", "step_00000020"]
    latest = folder / "step_00000020"
    assert sorted(p.name for p in latest.iterdir()) == ["meta.json", "model.safetensors", "training.pt"]
    assert sorted(p.name for p in (folder / "best").iterdir()) == ["meta.json", "model.safetensors"]
    meta = ckpt.read_meta(latest)
    assert meta["format"] == ckpt.FORMAT and meta["step"] == 20
    assert config_from_dict(meta["config"]) == trainer.config
    state = ckpt.load_training_state(latest)
    assert {"optimizer", "scheduler", "rng", "best", "bad_evals", "stopped_early"} <= set(state)
    assert state["scheduler"]["last_epoch"] == 20
    model = fresh_model(meta["config"])
    ckpt.load_weights(latest, model)
    for mine, theirs in zip(model.state_dict().values(), trainer.model.state_dict().values()):
        assert torch.equal(mine, theirs)


def test_best_checkpoint_holds_the_best_validation_metric(tmp_path: Path):
    run = tmp_path / "run"
    trainer = trained_run(run, train={"steps": 30, "eval_every": 3, "lr": 0.05, "checkpoint": {"every": 10}})
    evals = {e["step"]: e["loss"] for e in [*trainer_evals(run)]}
    best = ckpt.resolve_checkpoint(run)
    assert best.path.name == "best"
    assert best.meta["metrics"]["loss"] == pytest.approx(min(evals.values()))
    assert trainer.best == pytest.approx(min(evals.values()))


def trainer_evals(run: Path) -> list[dict]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["split"] == "val"]


def test_resolve_checkpoint_accepts_run_or_checkpoint_directories(tmp_path: Path):
    run = tmp_path / "run"
    trained_run(run, train={"steps": 6, "checkpoint": {"every": 3, "keep_best": False}})
    assert ckpt.resolve_checkpoint(run).path.name == "step_00000006"
    assert ckpt.resolve_checkpoint(run / "checkpoints" / "step_00000003").step == 3
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint found"):
        ckpt.resolve_checkpoint(tmp_path)


def test_partial_saves_are_ignored_and_cleaned_up(tmp_path: Path):
    run = tmp_path / "run"
    trained_run(run)
    folder = run / "checkpoints"
    partial = folder / ".tmp-step_00000025-999"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"\x00" * 10)
    assert ckpt.latest_checkpoint(run).name == "step_00000020"
    ckpt.recover_interrupted_saves(run)
    assert not partial.exists()


def test_a_checkpoint_moved_aside_by_an_interrupted_overwrite_is_put_back(tmp_path: Path):
    run = tmp_path / "run"
    trained_run(run)
    folder = run / "checkpoints"
    (folder / "best").rename(folder / ".old-best-4242")  # killed between the two renames of an overwrite
    stale = folder / ".old-step_00000020-4242"
    shutil.copytree(folder / "step_00000020", stale)  # killed after the replacement was in place
    ckpt.recover_interrupted_saves(run)
    assert ckpt.read_meta(folder / "best")["step"] > 0
    assert not stale.exists() and (folder / "step_00000020").is_dir()


def test_save_overwrites_an_existing_checkpoint_atomically(tmp_path: Path):
    model = torch.nn.Linear(2, 2)
    target = tmp_path / "checkpoints" / "best"
    ckpt.save_checkpoint(target, model, {"step": 1, "config": {}}, None)
    with torch.no_grad():
        model.weight.fill_(3.0)
    ckpt.save_checkpoint(target, model, {"step": 2, "config": {}}, None)
    assert ckpt.read_meta(target)["step"] == 2
    loaded = torch.nn.Linear(2, 2)
    ckpt.load_weights(target, loaded)
    assert torch.equal(loaded.weight, torch.full((2, 2), 3.0))
    assert sorted(p.name for p in target.parent.iterdir()) == ["best"]


KILL_DURING_SAVE = textwrap.dedent(
    """
    import os, signal, sys
    from seqlab import cli
    from seqlab.training import checkpoint as ckpt

    write_json = ckpt._write_json

    def dying_write_json(path, data):
        # the weights of step 10 are already in the temporary directory; die before its metadata
        if path.parent.name.startswith(".tmp-step_00000010"):
            os.kill(os.getpid(), signal.SIGKILL)
        return write_json(path, data)

    ckpt._write_json = dying_write_json
    sys.exit(cli.main(sys.argv[1:]))
    """
)


def test_a_kill_during_a_save_leaves_the_previous_checkpoint_loadable(tmp_path: Path):
    data = tiny_config(**SECTIONS)
    config = write_yaml(tmp_path / "run.yaml", data)
    run = tmp_path / "run"
    child = subprocess.run(
        [sys.executable, "-c", KILL_DURING_SAVE, "train", str(config), "--out", str(run)],
        capture_output=True, text=True, timeout=120, env=subprocess_env(),
    )
    assert child.returncode == -9, child.stderr  # really killed by SIGKILL
    folder = run / "checkpoints"
    partial = list(folder.glob(".tmp-step_00000010-*"))
    assert partial and (partial[0] / "model.safetensors").is_file() and not (partial[0] / "meta.json").exists()
    latest = ckpt.latest_checkpoint(run)
    assert latest is not None and latest.name == "step_00000005"
    assert ckpt.read_meta(latest)["step"] == 5
    ckpt.load_weights(latest, fresh_model(data))
    assert ckpt.load_training_state(latest)["scheduler"]["last_epoch"] == 5

    assert cli.main(["train", str(config), "--out", str(run), "--resume"]) == 0
    assert not list(folder.glob(".tmp-*"))
    reference = Trainer(config_from_dict(data)).fit()
    final = json.loads((run / "final_metrics.json").read_text())
    assert final["step"] == 20
    assert final["val"] == reference.final["val"] and final["test"] == reference.final["test"]


# --- loading never unpickles code; bad files get a clear CheckpointError ---------------------------------


class Exploit:
    """Pickles to a call of exec that would create a marker file when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_malicious_training_state_is_never_executed(tmp_path: Path):
    run = tmp_path / "run"
    trained_run(run)
    latest = ckpt.latest_checkpoint(run)
    marker = tmp_path / "pwned"
    torch.save({"optimizer": Exploit(marker), "scheduler": {}, "rng": {}}, latest / ckpt.TRAINING)
    with pytest.raises(ckpt.CheckpointError, match=r"asks to call exec\).*seqlab never unpickles") as refused:
        ckpt.load_training_state(latest)
    assert "weights_only" not in str(refused.value)  # no advice to switch the safety off
    assert not marker.exists()
    # the same file reached through `seqlab train --resume`
    config = write_yaml(tmp_path / "run.yaml", tiny_config(**SECTIONS))
    assert cli.main(["train", str(config), "--out", str(run), "--resume"]) == 2
    assert not marker.exists()
    # a bare pickle (not torch's zip format) with the same payload
    (latest / ckpt.TRAINING).write_bytes(pickle.dumps(Exploit(marker)))
    with pytest.raises(ckpt.CheckpointError):
        ckpt.load_training_state(latest)
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_corrupt_and_foreign_files_get_a_clear_error(tmp_path: Path):
    run = tmp_path / "run"
    trained_run(run)
    latest = ckpt.latest_checkpoint(run)
    model = fresh_model(tiny_config())

    weights = latest / ckpt.WEIGHTS
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(ckpt.CheckpointError, match="cannot be read as weights"):
        ckpt.load_weights(latest, model)
    weights.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ckpt.CheckpointError, match="cannot be read as weights"):
        ckpt.load_weights(latest, model)
    weights.write_bytes(good)
    with pytest.raises(ckpt.CheckpointError, match=r"does not match the model .* missing \['mlp.layers.4.bias'"):
        ckpt.load_weights(latest, fresh_model(tiny_config(model={"hidden_sizes": [4, 2]})))
    with pytest.raises(ckpt.CheckpointError, match=r"shapes differ \(mlp.layers.0.bias \(4,\) in the file, \(5,\)"):
        ckpt.load_weights(latest, fresh_model(tiny_config(model={"hidden_sizes": [5]})))

    training = latest / ckpt.TRAINING
    training.write_bytes(b"\x80\x04garbage")
    with pytest.raises(ckpt.CheckpointError, match="corrupt or not a seqlab training state"):
        ckpt.load_training_state(latest)
    torch.save(torch.zeros(3), training)  # a valid torch file, but not ours
    with pytest.raises(ckpt.CheckpointError, match="not a seqlab training state"):
        ckpt.load_training_state(latest)
    training.unlink()
    with pytest.raises(ckpt.CheckpointError, match="cannot resume training"):
        ckpt.load_training_state(latest)

    meta = latest / ckpt.META
    meta.write_text("{ half a json")
    with pytest.raises(ckpt.CheckpointError, match="is corrupt"):
        ckpt.read_meta(latest)
    meta.write_text(json.dumps({"step": 3, "format": "someone-else"}))
    with pytest.raises(ckpt.CheckpointError, match="not a seqlab checkpoint"):
        ckpt.read_meta(latest)
    with pytest.raises(ckpt.CheckpointError, match="not a checkpoint directory"):
        ckpt.read_meta(tmp_path / "nowhere")
    meta.unlink()
    with pytest.raises(ckpt.CheckpointError, match="is incomplete"):
        ckpt.read_meta(latest)


def test_cli_reports_a_corrupt_checkpoint_in_one_line(tmp_path: Path, capsys):
    config = write_yaml(tmp_path / "run.yaml", tiny_config(**SECTIONS))
    run = tmp_path / "run"
    assert cli.main(["train", str(config), "--out", str(run)]) == 0
    (ckpt.latest_checkpoint(run) / ckpt.WEIGHTS).write_bytes(b"garbage")
    capsys.readouterr()
    assert cli.main(["train", str(config), "--out", str(run), "--resume"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "seqlab train: error:" in lines[0] and "cannot be read as weights" in lines[0]


def test_an_out_dir_with_checkpoints_is_refused_without_resume(tmp_path: Path, capsys):
    config = write_yaml(tmp_path / "run.yaml", tiny_config(**SECTIONS))
    run = tmp_path / "run"
    assert cli.main(["train", str(config), "--out", str(run)]) == 0
    capsys.readouterr()
    assert cli.main(["train", str(config), "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert "already holds checkpoints" in err and "--resume" in err
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        Trainer(config_from_dict(tiny_config(**SECTIONS)), out_dir=run).fit()


def test_resume_refuses_a_different_model(tmp_path: Path):
    run = tmp_path / "run"
    trained_run(run)
    other = Trainer(config_from_dict(tiny_config(model={"hidden_sizes": [6]}, **SECTIONS)), out_dir=run)
    with pytest.raises(ConfigError, match="its 'model' section differs"):
        other.fit(resume=True)


def translation_run_with_checkpoints(run: Path) -> Path:
    """A tied-embedding Transformer trained 30 steps on synthetic translation, keeping steps 0010–0030."""
    Trainer(config_from_dict({
        "seed": 0,
        "task": {"name": "synthetic_translation", "max_len": 6, "eval_size": 16},
        "model": {"name": "transformer", "d_model": 16, "num_heads": 2, "num_encoder_layers": 1,
                  "num_decoder_layers": 1, "d_ff": 32, "dropout": 0.0, "tie_embeddings": True},
        "train": {"steps": 30, "lr": 0.01, "batch_size": 16, "eval_every": 1000, "progress": False, "tensorboard": False,
                  "checkpoint": {"every": 10, "keep_last": 4}},
    }), out_dir=run).fit()
    return run


def test_average_writes_the_mean_of_a_runs_last_checkpoints(tmp_path: Path, capsys):
    """A tied-embedding Transformer: the averaged checkpoint loads through the usual path, and each of its
    tensors is the mean of the same tensor in the three newest step checkpoints."""
    from seqlab.inference.translate import Translator

    run = translation_run_with_checkpoints(tmp_path / "run")
    assert cli.main(["average", str(run), "--last", "3"]) == 0
    out = run / "checkpoints" / "average_last_3"
    assert str(out) in capsys.readouterr().out
    assert ckpt.read_meta(out)["averaged_steps"] == [10, 20, 30]
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "model.safetensors"]

    models = [Translator.from_checkpoint(run / "checkpoints" / f"step_{step:08d}").model for step in (10, 20, 30)]
    averaged = Translator.from_checkpoint(out)
    for name, tensor in averaged.model.state_dict().items():
        expected = torch.stack([m.state_dict()[name].double() for m in models]).mean(0).float()
        assert torch.equal(tensor, expected), name
    assert not torch.equal(averaged.model.state_dict()["out.weight"], models[-1].state_dict()["out.weight"])
    assert averaged.model.out.weight is averaged.model.tgt_embed.table.weight  # still tied after loading
    assert len(averaged.translate(["a b c"])) == 1
    with pytest.raises(ckpt.CheckpointError, match="weights only"):
        ckpt.load_training_state(out)


def test_average_evaluate_scores_each_window_and_names_the_one_validation_picks(tmp_path: Path, capsys):
    """`--evaluate` prints the losses the run's own trainer gives each checkpoint, and picks by validation."""
    run = translation_run_with_checkpoints(tmp_path / "run")
    assert cli.main(["average", str(run), "--last", "2", "3", "--evaluate"]) == 0
    printed = {line.split(":")[0]: line for line in capsys.readouterr().out.splitlines()}
    trainer = Trainer(config_from_dict(ckpt.read_meta(ckpt.latest_checkpoint(run))["config"]), out_dir=None)
    expected = {}
    for name, path in [("newest (step_00000030)", ckpt.latest_checkpoint(run)),
                       ("mean of the last 2", run / "checkpoints" / "average_last_2"),
                       ("mean of the last 3", run / "checkpoints" / "average_last_3")]:
        ckpt.load_weights(path, trainer.model)
        expected[name] = (trainer.evaluate("val")["loss"], trainer.evaluate("test")["loss"])
        assert printed[name] == f"{name}: validation loss {expected[name][0]:.4f}, test loss {expected[name][1]:.4f}"
    picked = min(expected, key=lambda name: expected[name][0])
    assert printed["validation picks the " + picked] == f"validation picks the {picked}: test loss {expected[picked][1]:.4f}"
    assert len({round(val, 6) for val, _ in expected.values()}) == 3  # three different models were scored

    assert cli.main(["average", str(run), "--last", "2", "3", "--out", str(tmp_path / "mean")]) == 2
    assert "--out names one checkpoint" in capsys.readouterr().err
    for checkpoint in ckpt.list_checkpoints(run):  # as if the data had changed since training
        meta = json.loads((checkpoint / "meta.json").read_text())
        vocab = meta["task_state"]["target"]["vocab"]
        vocab["itos"] = list(reversed(vocab["itos"]))
        (checkpoint / "meta.json").write_text(json.dumps(meta))
    assert cli.main(["average", str(run), "--last", "2", "--evaluate"]) == 2
    assert "no longer gives the vocabulary it was trained with" in capsys.readouterr().err


def test_average_refuses_too_few_checkpoints_other_runs_and_a_foreign_out(tmp_path: Path, capsys):
    run, other = tmp_path / "run", tmp_path / "other"
    trained_run(run)  # keeps step 15 and step 20
    assert cli.main(["average", str(run), "--last", "3"]) == 2
    err = capsys.readouterr().err
    assert "holds 2 (step_00000015, step_00000020)" in err and "keep_last" in err
    trained_run(other, model={"hidden_sizes": [6]}, **SECTIONS)
    mixed = [ckpt.latest_checkpoint(run), ckpt.latest_checkpoint(other)]
    with pytest.raises(ckpt.CheckpointError, match="'model' configs differ"):
        ckpt.average_checkpoints(mixed, tmp_path / "mean")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(ckpt.CheckpointError, match="is not a checkpoint"):
        ckpt.average_checkpoints(ckpt.list_checkpoints(run), tmp_path / "notes")
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"
    with pytest.raises(ckpt.CheckpointError, match="can resume training"):
        ckpt.average_checkpoints(ckpt.list_checkpoints(run), ckpt.latest_checkpoint(run))
    assert (ckpt.latest_checkpoint(run) / ckpt.TRAINING).is_file()
