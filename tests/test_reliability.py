"""Nothing lost, nothing silent: diverged runs, one run per directory, atomic metrics rewrites, suspect
checkpoints, and one-line errors for bad input (issue 16)."""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import REPO, run_seqlab, seqlab_command, subprocess_env, tiny_config, write_yaml
from seqlab import cli
from seqlab.config import ConfigError, config_from_dict, load_config
from seqlab.training import Trainer
from seqlab.training import checkpoint as ckpt

# A regression MLP with ReLU and SGD at lr 1e6: the squared error overflows to inf, then NaN, within a few steps.
def diverging_config() -> dict:
    config = tiny_config(train={"steps": 30, "optimizer": "sgd", "lr": 1e6, "eval_every": 2,
                                "checkpoint": {"every": 2, "keep_last": 3}})
    config["task"] = {"name": "forecast", "window": 8, "horizon": 1}
    config["model"] = {"name": "rnn", "cell": "elman", "hidden_size": 8}
    return config


def weights_finite(path: Path) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in load_file(str(path / ckpt.WEIGHTS)).values())


def nan_weights(path: Path) -> None:
    """Overwrite a checkpoint's weights with NaN (what a pre-fix diverged run could leave behind)."""
    tensors = load_file(str(path / ckpt.WEIGHTS))
    save_file({key: torch.full_like(value, math.nan) for key, value in tensors.items()}, str(path / ckpt.WEIGHTS))


# --- 1. a diverged run ------------------------------------------------------------------------------------


def test_a_diverged_run_exits_non_zero_and_keeps_only_finite_checkpoints(tmp_path: Path):
    run = tmp_path / "run"
    config = write_yaml(tmp_path / "diverge.yaml", diverging_config())
    done = run_seqlab("train", str(config), "--out", str(run))
    assert done.returncode == 3, done.stdout + done.stderr
    assert "diverged" in done.stderr and "final_metrics.json" in done.stderr
    final = json.loads((run / "final_metrics.json").read_text())
    assert final["stop_reason"] == "diverged" and ("is nan" in final["message"] or "is inf" in final["message"])
    best = run / "checkpoints" / "best"
    assert not best.exists() or weights_finite(best)  # a NaN figure never becomes `best`
    for step in ckpt.list_checkpoints(run):
        assert weights_finite(step), step
    assert final["step"] < 30  # stopped at the divergence, not at train.steps


def test_resume_refuses_non_finite_weights_and_resume_from_an_earlier_step_works(tmp_path: Path, capsys):
    run = tmp_path / "run"
    config = write_yaml(tmp_path / "run.yaml", tiny_config(train={"steps": 20, "checkpoint": {"every": 5, "keep_last": 3}}))
    assert cli.main(["train", str(config), "--out", str(run)]) == 0
    latest = ckpt.latest_checkpoint(run)
    nan_weights(latest)
    capsys.readouterr()
    extended = ["--set", "train.steps=25"]
    assert cli.main(["train", str(config), "--out", str(run), "--resume", *extended]) == 2
    message = capsys.readouterr().err
    assert "non-finite weights" in message and "--resume-from 15" in message and "Traceback" not in message
    assert cli.main(["train", str(config), "--out", str(run), "--resume-from", "15", *extended]) == 0
    assert json.loads((run / "final_metrics.json").read_text())["step"] == 25


def test_non_finite_weights_are_refused_at_load(tmp_path: Path):
    run = tmp_path / "run"
    Trainer(config_from_dict(tiny_config(train={"steps": 4})), out_dir=run).fit()
    latest = ckpt.latest_checkpoint(run)
    nan_weights(latest)
    model = Trainer(config_from_dict(tiny_config())).model
    with pytest.raises(ckpt.CheckpointError, match="non-finite weights.*diverged"):
        ckpt.load_weights(latest, model)


def test_a_nan_validation_figure_never_becomes_best():
    from seqlab.training.stopping import BestTracker

    tracker = BestTracker(None)
    assert not tracker.update({"loss": math.nan})
    assert tracker.best is None
    assert tracker.update({"loss": 2.0}) and not tracker.update({"loss": math.inf}) and tracker.best == 2.0


# --- 2. one run per directory ------------------------------------------------------------------------------


def test_a_second_run_on_a_busy_directory_is_refused_naming_the_holder(tmp_path: Path):
    run = tmp_path / "run"
    slow = write_yaml(tmp_path / "slow.yaml", tiny_config(train={"steps": 100_000, "checkpoint": {"every": 50}}))
    first = subprocess.Popen(seqlab_command("train", str(slow), "--out", str(run)), env=subprocess_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (run / ".lock-owner.json").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        second = run_seqlab("train", str(slow), "--out", str(run), "--set", "train.steps=5")
        assert second.returncode == 2
        assert f"in use by another training run (pid {first.pid}" in second.stderr and "Traceback" not in second.stderr
        resumed = run_seqlab("train", str(slow), "--out", str(run), "--resume")
        assert resumed.returncode == 2 and f"pid {first.pid}" in resumed.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # the lock dies with its holder: the run resumes (or, before its first checkpoint, starts again)
    again = run_seqlab("train", str(slow), "--out", str(run), "--resume", "--set", "train.steps=60")
    assert again.returncode == 0, again.stderr


# --- 3. an atomic metrics rewrite ---------------------------------------------------------------------------

KILL_IN_REWRITE = textwrap.dedent(
    """
    import os, pathlib, signal, sys
    sys.path.insert(0, {tests!r})
    from conftest import tiny_config
    from seqlab.config import config_from_dict
    from seqlab.training import Trainer

    def killed(path, text, *args, **kwargs):
        # a kill in the middle of rewriting metrics.jsonl in place: half of it written, the rest lost
        if path.name == "metrics.jsonl":
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(text[: len(text) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        return real_write_text(path, text, *args, **kwargs)

    def killed_replace(src, dst, *args, **kwargs):
        if str(dst).endswith("metrics.jsonl"):
            os.kill(os.getpid(), signal.SIGKILL)
        return real_replace(src, dst, *args, **kwargs)

    real_write_text, real_replace = pathlib.Path.write_text, os.replace
    pathlib.Path.write_text = killed
    os.replace = killed_replace
    config = config_from_dict(tiny_config(train={{"steps": 40, "checkpoint": {{"every": 10}}}}))
    Trainer(config, out_dir={run!r}).fit(resume=True)
    """
)


def test_a_kill_while_resume_rewrites_metrics_loses_nothing(tmp_path: Path):
    run = tmp_path / "run"
    Trainer(config_from_dict(tiny_config(train={"steps": 20, "checkpoint": {"every": 10}})), out_dir=run).fit()
    before = (run / "metrics.jsonl").read_text()
    assert before.count("\n") > 20
    script = KILL_IN_REWRITE.format(tests=str(REPO / "tests"), run=str(run))
    killed = subprocess.run(["python", "-c", script], env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (run / "metrics.jsonl").read_text() == before  # the old log, whole
    Trainer(config_from_dict(tiny_config(train={"steps": 40, "checkpoint": {"every": 10}})), out_dir=run).fit(resume=True)
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["split"] == "train"]
    assert steps == list(range(1, 41))


# --- 4. suspect checkpoints ---------------------------------------------------------------------------------


def test_a_skipped_checkpoint_is_named_in_a_warning(tmp_path: Path, capsys):
    run = tmp_path / "run"
    Trainer(config_from_dict(tiny_config(train={"steps": 20, "checkpoint": {"every": 10}})), out_dir=run).fit()
    (run / "checkpoints" / "step_00000020" / ckpt.META).unlink()
    (run / "checkpoints" / "best" / ckpt.META).unlink()
    found = ckpt.resolve_checkpoint(run)
    err = capsys.readouterr().err
    assert found.path.name == "step_00000010"
    assert "skipping" in err and "best" in err and "step_00000020" in err and "no meta.json" in err


def test_resume_into_a_directory_without_a_run_is_an_error(tmp_path: Path, capsys):
    config = write_yaml(tmp_path / "run.yaml", tiny_config())
    assert cli.main(["train", str(config), "--out", str(tmp_path / "typo"), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "does not exist" in err
    assert not (tmp_path / "typo").exists()


def test_meta_without_config_is_a_clear_error(tmp_path: Path):
    run = tmp_path / "run"
    Trainer(config_from_dict(tiny_config(train={"steps": 4})), out_dir=run).fit()
    meta_file = ckpt.latest_checkpoint(run) / ckpt.META
    meta = json.loads(meta_file.read_text())
    del meta["config"]
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(ckpt.CheckpointError, match="damaged: it lacks 'config'"):
        ckpt.read_meta(meta_file.parent)


# --- 5. an empty validation split ---------------------------------------------------------------------------


def test_an_empty_validation_split_is_refused_before_training(tmp_path: Path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for split, lines in (("train", ["ein hund", "zwei katzen"]), ("val", ["ein sehr langer satz mit vielen worten"])):
        for lang in ("de", "en"):
            (corpus / f"{split}.{lang}").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    config = config_from_dict({  # every validation pair is longer than max_len, so the filter leaves none
        "task": {"name": "translation", "data_dir": str(corpus), "splits": {"train": "train", "val": "val"}, "max_len": 3},
        "model": {"name": "seq2seq", "embed_size": 4, "hidden_size": 4, "num_layers": 1},
        "train": {"steps": 50, "eval_every": 10, "progress": False, "tensorboard": False},
    })
    with pytest.raises(ConfigError, match="empty 'val' split"):
        Trainer(config)


# --- one-line errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("override", ["train.lr=[1,", "task.pattern={split}.{lang}"])
def test_bad_yaml_in_set_names_the_fix(override: str):
    with pytest.raises(ConfigError, match="is not valid YAML.*quote text"):
        load_config(REPO / "configs" / "tasks" / "xor_mlp.yaml", [override])


def test_out_pointing_at_a_file_is_a_clear_error(tmp_path: Path, capsys):
    config = write_yaml(tmp_path / "run.yaml", tiny_config())
    file = tmp_path / "a_file"
    file.write_text("x")
    assert cli.main(["train", str(config), "--out", str(file)]) == 2
    assert "is a file, not a directory" in capsys.readouterr().err


@pytest.fixture(scope="module")
def translator_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny seq2seq model on the synthetic translation task (a few seconds)."""
    run = tmp_path_factory.mktemp("translator") / "run"
    Trainer(config_from_dict({
        "task": {"name": "synthetic_translation", "max_len": 8, "eval_size": 16},
        "model": {"name": "seq2seq", "embed_size": 8, "hidden_size": 8, "num_layers": 1},
        "train": {"steps": 3, "batch_size": 16, "progress": False, "tensorboard": False},
    }), out_dir=run).fit()
    return run


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("lm")
    text = folder / "names.txt"
    text.write_text("".join(f"{name}\n" for name in ["anna", "bob", "carl", "dora", "emil"] * 8), encoding="utf-8")
    run = folder / "run"
    Trainer(config_from_dict({
        "task": {"name": "lm", "path": str(text), "format": "lines"}, "model": {"name": "bigram"},
        "train": {"steps": 3, "batch_size": 8, "progress": False, "tensorboard": False},
    }), out_dir=run).fit()
    return run


@pytest.mark.parametrize(("options", "message"), [
    (["--beam", "0"], "--beam must be at least 1 (1 = greedy), got 0"),
    (["--beam", "-2"], "--beam must be at least 1 (1 = greedy), got -2"),
    (["--beam", "3", "--patience", "0"], "--patience must be a number above 0 and at most 10"),
    (["--beam", "3", "--patience", "-1"], "--patience must be a number above 0 and at most 10"),
    (["--beam", "3", "--patience", "11"], "--patience must be a number above 0 and at most 10"),
])
def test_eval_and_translate_refuse_bad_decoding_options_alike(translator_run: Path, tmp_path: Path, capsys,
                                                              options: list[str], message: str):
    src, ref = tmp_path / "src.txt", tmp_path / "ref.txt"
    src.write_text("a\n")
    ref.write_text("a\n")
    for command in (["eval", str(translator_run), "--src", str(src), "--ref", str(ref)],
                    ["translate", str(translator_run), "--input", str(src)]):
        assert cli.main([*command, *options]) == 2
        assert message in capsys.readouterr().err


def test_binary_junk_on_stdin_gets_the_same_utf8_error_as_a_file(translator_run: Path, tmp_path: Path):
    junk = b"\xff\xfe\x00bad\n"
    file = tmp_path / "junk.txt"
    file.write_bytes(junk)
    through_file = run_seqlab("translate", str(translator_run), "--input", str(file))
    through_stdin = subprocess.run(seqlab_command("translate", str(translator_run)), input=junk, capture_output=True,
                                   env=subprocess_env(), timeout=120)
    assert through_file.returncode == 2 and through_stdin.returncode == 2
    assert "line 1: invalid UTF-8" in through_file.stderr
    assert "stdin, line 1: invalid UTF-8" in through_stdin.stderr.decode()


def test_attention_dir_that_is_a_file_is_a_clear_error(translator_run: Path, tmp_path: Path, capsys):
    file = tmp_path / "maps"
    file.write_text("x")
    source = tmp_path / "src.txt"
    source.write_text("a\n")
    assert cli.main(["translate", str(translator_run), "--input", str(source), "--attention-dir", str(file)]) == 2
    assert "--attention-dir" in capsys.readouterr().err


@pytest.mark.parametrize("temperature", ["inf", "nan", "1e308", "-1"])
def test_sample_refuses_a_temperature_out_of_range(lm_run: Path, capsys, temperature: str):
    assert cli.main(["sample", str(lm_run), "--temperature", temperature, "--num", "1"]) == 2
    err = capsys.readouterr().err
    assert "--temperature must be a number from 0 (greedy) to 100" in err and "Traceback" not in err


def test_translate_and_sample_refuse_a_nan_checkpoint(translator_run: Path, lm_run: Path, tmp_path: Path, capsys):
    for run, command in ((translator_run, ["translate"]), (lm_run, ["sample", "--num", "1"])):
        broken = tmp_path / command[0] / "broken"
        shutil.copytree(run / "checkpoints" / "best", broken)
        nan_weights(broken)
        source = tmp_path / "src.txt"
        source.write_text("a\n")
        extra = ["--input", str(source)] if command[0] == "translate" else []
        assert cli.main([command[0], str(broken), *command[1:], *extra]) == 2
        assert "non-finite weights" in capsys.readouterr().err


def test_a_huge_line_is_refused_with_its_memory_estimate_not_allocated(translator_run: Path, tmp_path: Path, capsys):
    source = tmp_path / "huge.txt"
    source.write_text("old king sees red bird " * 20_000 + "\n")  # 100,000 source tokens
    began = time.monotonic()
    assert cli.main(["translate", str(translator_run), "--input", str(source), "--max-src-len", "200000"]) == 2
    err = capsys.readouterr().err
    assert "100000 source tokens" in err and "GiB" in err and "split the line" in err
    assert time.monotonic() - began < 30  # refused up front, not after trying


def test_long_lines_are_decoded_in_smaller_batches_within_the_budget():
    from seqlab.inference.translate import decoding_bytes, memory_bounded_batches

    encoded = [[1] * length for length in (5, 5, 400, 400, 400)]
    budget = decoding_bytes(400, 2, beam_size=5, max_len_ratio=1.5)  # room for two long sentences at a time
    batches = list(memory_bounded_batches(list(range(5)), encoded, 64, 5, 1.5, budget, first_line=1))
    assert sorted(i for rows in batches for i in rows) == list(range(5))  # nothing dropped
    assert all(decoding_bytes(max(len(encoded[i]) for i in rows), len(rows), 5, 1.5) <= budget for rows in batches)
    assert len(batches) == 3
