"""Every random choice of a run against its seed derivation written out here (numpy's SeedSequence over the run
seed, the stream's tag and its position): augmentations, data order, negatives, the few-shot split.

A derivation that drops the run seed, the epoch, the image index, the step, the group or the class key, or two
streams that share a tag, changes one of these values."""

import random

import numpy as np
import pytest
import torch

from pomp_plugins.pretrain.data import (
    AUGMENTATION,
    NEGATIVES,
    ORDER,
    PROMPT_INIT,
    GroupSampler,
    MultiViewDataset,
    derive_seed,
)
from pomp_plugins.pretrain.objective import group_negatives
from pomp_plugins.pretrain.split import draw_split
from pomp_plugins.pretrain.synthetic import class_list, make_image_folder

# the tags of the streams, as numbers: a changed or shared tag changes every expected value below
TAG_AUGMENTATION, TAG_ORDER, TAG_NEGATIVES = 1, 2, 3


def seed_of(*parts: int) -> int:
    """The 63-bit seed of ``parts``: the first 64-bit word of numpy's SeedSequence over them, top bit cleared."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0]) % 2**63


def test_derived_seeds_are_seed_sequence_words_and_the_tags_are_distinct():
    for parts in [(0,), (1, 2), (7, 1, 0, 5), (2**40, 3, 9, 2**31)]:
        assert derive_seed(*parts) == seed_of(*parts)
    # a seed whose 64-bit word has its top bit set (so the mask matters) and one whose word has it clear
    words = {
        parts: int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0])
        for parts in [(s, 1) for s in range(8)]
    }
    assert any(w >= 2**63 for w in words.values()) and any(w < 2**63 for w in words.values())
    assert all(derive_seed(*parts) == word % 2**63 for parts, word in words.items())
    assert (AUGMENTATION, ORDER, NEGATIVES) == (TAG_AUGMENTATION, TAG_ORDER, TAG_NEGATIVES)
    assert len({AUGMENTATION, ORDER, NEGATIVES, PROMPT_INIT}) == 4


def recorded_draws(image) -> torch.Tensor:
    """An "augmentation" that shows which random stream it drew from: three numbers of torch's global generator."""
    return torch.rand(3)


@pytest.fixture(scope="module")
def one_picture(tmp_path_factory):
    root = make_image_folder(tmp_path_factory.mktemp("pictures"), ["red circle"], 1, size=8)
    return str(root / "red_circle" / "0000.png")


@pytest.mark.parametrize("seed,epoch", [(5, 0), (5, 2), (11, 2)])
def test_views_come_from_the_seed_of_run_epoch_and_image(one_picture, seed, epoch):
    # the same picture at three indices: only the index tells their views apart
    dataset = MultiViewDataset([one_picture] * 3, [0, 1, 2], recorded_draws, views=2, seed=seed)
    for index in range(3):
        torch.manual_seed(seed_of(seed, TAG_AUGMENTATION, epoch, index))
        expected = torch.stack([torch.rand(3), torch.rand(3)])
        sample = dataset[(epoch, index)]
        assert torch.equal(sample.data, expected) and sample.label == index


@pytest.mark.parametrize("seed,epoch", [(1, 0), (1, 3), (4, 3)])
def test_the_data_order_is_the_permutation_of_the_run_seed_and_epoch(seed, epoch):
    order = torch.randperm(10, generator=torch.Generator().manual_seed(seed_of(seed, TAG_ORDER, epoch))).tolist()
    groups = list(GroupSampler(10, 3, 2, 0, 1, seed=seed, epoch=epoch))
    assert [index for group in groups for _, index in group] == order
    assert {e for group in groups for e, _ in group} == {epoch}
    # rank 1 of 2 takes the second group of every step: images 3..5 of the order, then 9
    assert list(GroupSampler(10, 3, 2, 1, 2, seed=seed, epoch=epoch)) == [
        [(epoch, i) for i in order[3:6]],
        [(epoch, i) for i in order[9:]],
    ]


@pytest.mark.parametrize("seed,step,group", [(1, 0, 0), (1, 0, 1), (1, 6, 1), (9, 6, 1)])
def test_negatives_are_a_permutations_head_from_the_seed_of_run_step_and_group(seed, step, group):
    generator = torch.Generator().manual_seed(seed_of(seed, TAG_NEGATIVES, step, group))
    expected = torch.randperm(500, generator=generator)[:39]
    assert torch.equal(group_negatives(500, 40, seed=seed, step=step, group=group), expected)


@pytest.mark.parametrize("seed", [3, 4])
def test_the_few_shot_split_draws_each_class_from_the_run_seed_and_its_key(tmp_path, seed):
    names = class_list(3)
    make_image_folder(tmp_path / "train", names, 6, size=8)
    split = draw_split(tmp_path, shots=2, val_per_class=3, seed=seed)
    assert split.keys == sorted(name.replace(" ", "_") for name in names)
    for label, key in enumerate(split.keys):
        files = sorted(f"{key}/{f.name}" for f in (tmp_path / "train" / key).iterdir())
        drawn = random.Random(f"{seed}:{key}").sample(files, len(files))
        assert [p for p, l in split.train if l == label] == drawn[:2]
        assert [p for p, l in split.val if l == label] == drawn[2:5]


def test_split_files_paths_roots_and_bad_files(tmp_path):
    import json

    from pomp_plugins.pretrain.config import PretrainError
    from pomp_plugins.pretrain.split import FewShotSplit, image_root

    make_image_folder(tmp_path / "flat", class_list(2), 3, size=8)  # no train/ folder: the root holds the classes
    assert image_root(tmp_path / "flat") == tmp_path / "flat"
    split = draw_split(tmp_path / "flat", shots=1, val_per_class=1, seed=0, names_file=None)
    assert split.image_root == "." and split.settings == {
        "seed": 0,
        "shots": 1,
        "val_per_class": 1,
        "vocabulary": None,
        "names_file": None,
        "allow_unnamed": False,
    }
    paths, labels = split.paths(tmp_path / "flat", "val")
    assert labels == [0, 1] and paths == [str(tmp_path / "flat" / "." / p) for p, _ in split.val]
    assert all((tmp_path / "flat" / p).is_file() for p, _ in split.train + split.val)
    split.save(tmp_path / "split.json")
    stored = json.loads((tmp_path / "split.json").read_text())
    assert (stored["format"], stored["version"]) == ("pomp-fewshot-split", 1)
    assert FewShotSplit.load(tmp_path / "split.json") == split
    (tmp_path / "other.json").write_text(json.dumps({**stored, "format": "something"}))
    with pytest.raises(PretrainError, match="is not a few-shot split file"):
        FewShotSplit.load(tmp_path / "other.json")
    (tmp_path / "newer.json").write_text(json.dumps({**stored, "version": 2}))
    with pytest.raises(PretrainError, match="version 2 is newer than 1"):
        FewShotSplit.load(tmp_path / "newer.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(PretrainError, match="is not a few-shot split file"):
        FewShotSplit.load(tmp_path / "list.json")


def test_only_the_main_process_draws_the_split_and_everyone_waits_for_it(tmp_path):
    from pomp_plugins.pretrain.split import prepare_split

    make_image_folder(tmp_path / "data", class_list(2), 3, size=8)
    settings = dict(shots=1, val_per_class=1, seed=0, vocabulary=None, names_file=None, allow_unnamed=False)
    waited = []
    with pytest.raises(FileNotFoundError):  # another rank: never draws, reads what the main process wrote
        prepare_split(tmp_path / "split.json", tmp_path / "data", False, lambda: waited.append("rank 1"), **settings)
    assert waited == ["rank 1"] and not (tmp_path / "split.json").exists()
    split = prepare_split(tmp_path / "split.json", tmp_path / "data", True, lambda: waited.append("rank 0"), **settings)
    assert waited == ["rank 1", "rank 0"] and split == draw_split(tmp_path / "data", **settings)
    assert prepare_split(tmp_path / "split.json", tmp_path / "data", False, lambda: None, **settings) == split
