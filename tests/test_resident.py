"""Models held in memory by a block of rounds (rosd/stages/resident.py): the trainer carried from
round to round equals the one read back from checkpoints, an unwritten checkpoint is marked, and an
engine given new weights in memory samples as one loaded from them. The same bytes through a real
block of rounds: tests/test_round_blocks.py."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from test_training import LORA, METHOD, files, rounds, theta0  # noqa: F401  (fixtures)

from rosd.engines.hf import HFEngine
from rosd.models.loading import load_model, load_tokenizer
from rosd.stages import resident
from rosd.training.checkpoints import ADAPTER, EMA_TEACHER, IN_MEMORY, TRAINER_STATE

SDPO = {**METHOD, "teacher": "ema", "ema_rate": 0.05}


def _weights(checkpoint) -> dict[str, torch.Tensor]:
    return {name: tensor for file in sorted(checkpoint.glob("*.safetensors")) for name, tensor in load_file(file).items()}


@pytest.mark.parametrize("method, train", [(METHOD, {}), (SDPO, {}), (METHOD, {"lora": LORA})], ids=["frozen-teacher", "ema-teacher", "lora"])
def test_rounds_held_in_memory_end_where_rounds_through_checkpoints_end(method, train, theta0, files, tmp_path):  # noqa: F811
    on_disk = rounds(theta0, files, tmp_path / "disk", 2, method=method, **train)
    held = tmp_path / "held"
    with resident.hold({str(held / "round2")}):
        last = rounds(theta0, files, held, 2, method=method, **train)
        assert resident.holds(last) and not resident.holds(held / "round1")
        if train:  # the engine and teacher scoring get the merged weights the checkpoint holds
            merged = resident.scoring_model(str(last), {"device": "cpu", "dtype": "float32"})
            for name, tensor in _weights(last).items():
                assert torch.equal(merged.state_dict()[name], tensor), name
            assert hasattr(resident._held.trainer.student, "merge_and_unload")  # still the LoRA student, training on
    assert not resident.holds(last)  # the block's models went with it
    unwritten = held / "round1"  # round 2's AdamW moments come from round 1's step, held in memory
    assert (unwritten / IN_MEMORY).exists() and (unwritten / "config.json").exists()
    assert not list(unwritten.glob("*.safetensors")) and not (unwritten / TRAINER_STATE).exists()
    for r in (1, 2):
        assert (held / f"metrics{r}.json").read_bytes() == (tmp_path / "disk" / f"metrics{r}.json").read_bytes()
    for name, tensor in _weights(on_disk).items():
        assert torch.equal(_weights(last)[name], tensor), name
    written, read_back = (torch.load(c / TRAINER_STATE, weights_only=True) for c in (last, on_disk))
    assert written["global_step"] == read_back["global_step"] == 2
    torch.testing.assert_close(written["optimizer"], read_back["optimizer"], rtol=0, atol=0)
    if method is SDPO:
        for name, tensor in _weights(on_disk / EMA_TEACHER).items():
            assert torch.equal(_weights(last / EMA_TEACHER)[name], tensor), name
    if train:
        for name, tensor in _weights(on_disk / ADAPTER).items():
            assert torch.equal(_weights(last / ADAPTER)[name], tensor), name


def test_an_engine_given_weights_in_memory_samples_as_one_loaded_from_them(theta0, tmp_path):  # noqa: F811
    moved = load_model(theta0)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in moved.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    moved.save_pretrained(tmp_path / "moved")
    load_tokenizer(theta0).save_pretrained(tmp_path / "moved")

    pushed = HFEngine(theta0)
    prompts = [pushed.tokenizer("Compute 12 + 30.")["input_ids"], pushed.tokenizer("Sort: c a b")["input_ids"]]
    sample = dict(n=3, temperature=1.0, top_p=1.0, max_new_tokens=16, seed=7)
    before = pushed.generate(prompts, **sample)
    pushed.load_weights(moved.state_dict())
    after, loaded = pushed.generate(prompts, **sample), HFEngine(str(tmp_path / "moved")).generate(prompts, **sample)
    as_lists = [[(s.ids, s.logps) for s in group] for group in after]
    assert as_lists == [[(s.ids, s.logps) for s in group] for group in loaded]
    assert as_lists != [[(s.ids, s.logps) for s in group] for group in before]


def test_a_block_engine_is_started_once_and_given_each_rounds_weights(theta0, files, tmp_path):  # noqa: F811
    """Inside a block: the engine of round 2's checkpoint is the one started on θ0, given the weights
    the rounds trained (round 1 runs at the warm-up's lr 0); teacher scoring reads them from the
    engine's model."""
    settings = {"device": "cpu", "dtype": "float32", "generation": {"backend": "hf", "batch_size": 8, "tensor_parallel_size": 1}}
    with resident.hold(set()):
        started = resident.engine(theta0, settings)
        second = rounds(theta0, files, tmp_path, 2)
        engine = resident.engine(str(second), settings)
        assert engine is started
        trained = resident.scoring_model(str(second), settings)
        assert trained is engine.model
        reference = load_model(theta0)
        assert any(not torch.equal(a, b) for a, b in zip(trained.state_dict().values(), reference.state_dict().values()))
        assert resident.scoring_model(theta0, settings, frozen=True) is resident.scoring_model(theta0, settings, frozen=True)


def test_a_block_whose_first_rounds_needed_no_engine_starts_one_on_the_held_weights(theta0, files, tmp_path):  # noqa: F811
    """Round 2's checkpoint exists only in memory (its folder holds no weights); when the block's
    first engine is asked for it (round 1's rollouts were done and no group needed a reflection), the
    engine starts from the checkpoint the trainer was loaded from and is given the held weights."""
    settings = {"device": "cpu", "dtype": "float32", "generation": {"backend": "hf", "batch_size": 8, "tensor_parallel_size": 1}}
    with resident.hold(set()):
        second = rounds(theta0, files, tmp_path, 2)
        assert not (second / "model.safetensors").exists()
        engine = resident.engine(str(second), settings)
        held = resident.trainer(str(second), {}, {}, device="cpu", dtype="float32").student
        assert all(torch.equal(a, b) for a, b in zip(engine.model.state_dict().values(), held.state_dict().values()))
