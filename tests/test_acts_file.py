"""The paired-activation file (.acts.pt) and the one slug rule that names it."""

from __future__ import annotations

import pickle

import pytest
import torch

from xsteer.core.io import slug, spec_slug
from xsteer.errors import InputError
from xsteer.transfer.acts_file import load_paired, paired_file, paired_name, save_paired


def test_a_pair_round_trips_and_a_file_written_before_reads(tmp_path):
    xp, yc = torch.randn(4, 5, 8), torch.randn(3, 5, 6)
    path = save_paired(xp, yc, paired_file(tmp_path, "org/parent", "child"))
    assert path.name == "org_parent_to_child.acts.pt" and paired_name(path) == "org_parent_to_child"
    a, b = load_paired(path)
    assert torch.equal(a, xp) and torch.equal(b, yc)
    torch.save([xp, yc], tmp_path / "old.acts.pt")  # how files were written before this module
    assert torch.equal(load_paired(tmp_path / "old.acts.pt")[1], yc)


def test_anything_but_a_pair_of_tensors_is_one_clear_error(tmp_path):
    torch.save({"a": torch.zeros(2)}, tmp_path / "dict.pt")
    with pytest.raises(InputError, match="does not hold a \\(parent, child\\) pair"):
        load_paired(tmp_path / "dict.pt")
    (tmp_path / "code.pt").write_bytes(pickle.dumps(object(), protocol=2))
    with pytest.raises(InputError, match="not a readable activation file"):
        load_paired(tmp_path / "code.pt")


def test_slug_keeps_safe_characters_and_names_a_local_model_by_its_folder(tmp_path):
    assert slug("Qwen/Qwen3 0.6B") == "Qwen_Qwen3_0.6B"
    model = tmp_path / "my-model"
    model.mkdir()
    assert spec_slug(str(model)) == "my-model" and spec_slug("Qwen/Qwen3-0.6B") == "Qwen_Qwen3-0.6B"
