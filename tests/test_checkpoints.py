"""What an evaluated round keeps of its temporary checkpoint (rosd/training/checkpoints.py)."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from rosd.training.checkpoints import keep_checkpoint


@pytest.fixture
def checkpoint(tmp_path):
    root = tmp_path / "round3" / "checkpoint"
    names = ("config.json", "model.safetensors", "tokenizer.json", "trainer_state.pt", "ema_teacher/model.safetensors",
             "adapter/adapter_config.json", ".snakemake_timestamp")
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name)
    return root


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_an_evaluated_round_keeps_its_weights_as_links(checkpoint, tmp_path):
    out = tmp_path / "round3" / "model"
    keep_checkpoint(checkpoint=str(checkpoint), out=str(out), settings={"resumable": False, "dtype": "float32"})
    assert _files(out) == ["config.json", "model.safetensors", "tokenizer.json"]
    # the same inode: no byte copied, and the weights outlive the checkpoint's removal
    assert os.stat(out / "model.safetensors").st_ino == os.stat(checkpoint / "model.safetensors").st_ino
    (checkpoint / "model.safetensors").unlink()
    assert (out / "model.safetensors").read_text() == "model.safetensors"


def test_the_last_round_keeps_its_whole_checkpoint(checkpoint, tmp_path):
    out = tmp_path / "round3" / "model"
    keep_checkpoint(checkpoint=str(checkpoint), out=str(out), settings={"resumable": True, "dtype": "bfloat16"})
    # all but Snakemake's timestamp, which the kept model must not share with the checkpoint
    assert _files(out) == [f for f in _files(checkpoint) if f != ".snakemake_timestamp"]
    assert os.stat(out / "ema_teacher" / "model.safetensors").st_nlink == 2


def test_weights_kept_in_the_model_dtype_are_cast_and_the_rest_linked(tmp_path):
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    weights = {"w": torch.tensor([1.0, 1 / 3], dtype=torch.float32), "positions": torch.tensor([1, 2])}
    save_file(weights, checkpoint / "model.safetensors")
    (checkpoint / "config.json").write_text(json.dumps({"dtype": "float32", "hidden_size": 8}))
    (checkpoint / "tokenizer.json").write_text("{}")
    out = tmp_path / "model"
    keep_checkpoint(checkpoint=str(checkpoint), out=str(out), settings={"resumable": False, "dtype": "bfloat16"})
    kept = load_file(out / "model.safetensors")
    assert kept["w"].dtype == torch.bfloat16 and kept["w"].tolist() == [1.0, 0.333984375]  # 1/3 rounded to 8 bits
    assert kept["positions"].dtype == torch.int64 and kept["positions"].tolist() == [1, 2]
    assert json.loads((out / "config.json").read_text()) == {"dtype": "bfloat16", "hidden_size": 8}
    assert os.stat(out / "tokenizer.json").st_ino == os.stat(checkpoint / "tokenizer.json").st_ino
