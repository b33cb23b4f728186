"""A checkpoint whose metadata rnnstream did not write fails with a CheckpointError naming it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from rnnstream.errors import CheckpointError
from rnnstream.models import CharLM, CharLMConfig, load_checkpoint, read_checkpoint_extra


def _write(path: Path, metadata: dict[str, str]) -> Path:
    """A real safetensors file holding a small CharLM's weights and the given metadata."""
    torch.manual_seed(0)
    model = CharLM(CharLMConfig(num_layers=1, hidden_size=4, embed_size=3, chars="ab"))
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata=metadata)
    return path


CONFIG = CharLMConfig(num_layers=1, hidden_size=4, embed_size=3, chars="ab").to_json()


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ('["cell", "lstm"]', "JSON object, got list"),
        ("42", "JSON object, got int"),
        ('"lstm"', "JSON object, got str"),
        ("{not json", "invalid CharLM config"),
        ('{"hidden_size": "wide"}', "wrong type"),
        ('{"num_layers": 1, "hidden_size": 4, "embed_size": 3, "chars": 5}', "wrong type"),
        ('{"num_layers": 1, "hidden_size": 4, "embed_size": 3, "cell": 7}', "cell must be one of"),
        (
            '{"num_layers": 1, "hidden_size": 4, "embed_size": 3, "chars": "ab", "depth": 2}',
            "depth",
        ),
    ],
)
def test_a_config_that_is_not_a_valid_object_names_the_file(
    tmp_path: Path, config: str, words: str
) -> None:
    path = _write(
        tmp_path / "bad.safetensors", {"rnnstream.model": "CharLM", "rnnstream.config": config}
    )
    with pytest.raises(CheckpointError, match=words) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_a_missing_config_names_the_file_and_the_key(tmp_path: Path) -> None:
    path = _write(tmp_path / "noconfig.safetensors", {"rnnstream.model": "CharLM"})
    with pytest.raises(CheckpointError, match=r"rnnstream\.config") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_a_config_with_fields_missing_fails_on_the_weights(tmp_path: Path) -> None:
    # Every field has a default, so the model builds at the default size; its weights differ.
    path = _write(
        tmp_path / "partial.safetensors", {"rnnstream.model": "CharLM", "rnnstream.config": "{}"}
    )
    with pytest.raises(CheckpointError, match="weights do not match the config") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_a_valid_config_still_loads(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "good.safetensors", {"rnnstream.model": "CharLM", "rnnstream.config": CONFIG}
    )
    assert load_checkpoint(path).config == CharLMConfig.from_json(CONFIG)


@pytest.mark.parametrize(
    ("extra", "words"), [("[1, 2]", "not an object"), ("{oops", "not valid JSON")]
)
def test_extra_metadata_that_is_not_an_object_names_the_file(
    tmp_path: Path, extra: str, words: str
) -> None:
    metadata = {"rnnstream.model": "CharLM", "rnnstream.config": CONFIG, "rnnstream.extra": extra}
    path = _write(tmp_path / "extra.safetensors", metadata)
    with pytest.raises(CheckpointError, match=words) as info:
        read_checkpoint_extra(path)
    assert str(path) in str(info.value)
