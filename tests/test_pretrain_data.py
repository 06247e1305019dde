"""Pre-training data: class naming, the few-shot split, corrupt images, augmentations, data order, negatives."""

import math

import pytest
import torch

from pomp_plugins.images.folder import (
    ImageFolderIndex,
    Sample,
    Skipped,
    class_names,
    collate_skipping,
)
from pomp_plugins.pretrain.config import PretrainConfig, PretrainError
from pomp_plugins.pretrain.data import GroupSampler, MultiViewDataset, train_augmentation
from pomp_plugins.pretrain.objective import group_negatives
from pomp_plugins.pretrain.split import FewShotSplit, draw_split, prepare_split
from pomp_plugins.pretrain.synthetic import class_list, make_image_folder
from pomp_plugins.pretrain.trainer import learning_rate_factor
from pomp_plugins.prompt import VocabularyError, get_vocabulary


@pytest.fixture
def tree(tmp_path):
    """DATA/train with 3 classes of 5, 5 and 2 images, an empty class folder, one corrupt and one truncated file."""
    data = tmp_path / "data"
    make_image_folder(data / "train", class_list(3), 5, size=24)
    for extra in list((data / "train" / "green_circle").iterdir())[2:]:
        extra.unlink()
    (data / "train" / "empty_class").mkdir()
    (data / "train" / "red_circle" / "corrupt.jpg").write_bytes(b"this is not a JPEG")
    good = (data / "train" / "blue_circle" / "0000.png").read_bytes()
    (data / "train" / "blue_circle" / "truncated.png").write_bytes(good[: len(good) // 2])
    (data / "val" / "red_circle").mkdir(parents=True)  # the test split: must never be read
    return data


def test_wordnet_folders_are_named_and_unknown_ids_are_clear_errors():
    vocabulary = get_vocabulary("imagenet21k-p")
    keys = [vocabulary.keys[0], vocabulary.keys[5]]
    assert class_names(keys, vocabulary) == [vocabulary.names[0], vocabulary.names[5]]
    assert class_names(keys) == [vocabulary.names[0], vocabulary.names[5]]  # WordNet lemmas by default
    with pytest.raises(VocabularyError, match=r"1 of 2 class folders have no name.*n99999999.*--allow-unnamed"):
        class_names([keys[0], "n99999999"], vocabulary)
    with pytest.warns(UserWarning, match="n99999999"):
        assert class_names([keys[0], "n99999999"], vocabulary, allow_unnamed=True)[1] == "n99999999"


def test_names_files_map_or_list_the_folders(tmp_path):
    mapping = tmp_path / "names.tsv"
    mapping.write_text("b_dir\tbee\na_dir\tant\n")
    assert class_names(["a_dir", "b_dir"], names_file=mapping) == ["ant", "bee"]
    listed = tmp_path / "names.txt"
    listed.write_text("ant\nbee\n")
    assert class_names(["a_dir", "b_dir"], names_file=listed) == ["ant", "bee"]
    with pytest.raises(VocabularyError, match="lists 2 names but there are 3 class folders"):
        class_names(["a", "b", "c"], names_file=listed)
    assert class_names(["traffic_light"]) == ["traffic light"]


def test_names_files_in_imagenets_loc_synset_mapping_style(tmp_path):
    """``n01440764 tench, Tinca tinca``: the folder, a space, the name; not read as a plain list of names."""
    synsets = tmp_path / "LOC_synset_mapping.txt"
    synsets.write_text("n01443537 goldfish, Carassius auratus\nn01440764 tench, Tinca tinca\n")
    assert class_names(["n01440764", "n01443537"], names_file=synsets) == [
        "tench, Tinca tinca",
        "goldfish, Carassius auratus",
    ]
    spaced_names = tmp_path / "names.txt"  # names with spaces whose first word is no folder stay a plain list
    spaced_names.write_text("red circle\nblue square\n")
    assert class_names(["a_dir", "b_dir"], names_file=spaced_names) == ["red circle", "blue square"]
    mixed = tmp_path / "mixed.txt"
    mixed.write_text("n01440764 tench\ngoldfish\n")
    with pytest.raises(VocabularyError, match="some lines start with a class folder and some do not, e.g. 'goldfish'"):
        class_names(["n01440764", "n01443537"], names_file=mixed)


def test_few_shot_split_is_deterministic_capped_and_disjoint(tree):
    first = draw_split(tree, shots=3, val_per_class=1, seed=7)
    again = draw_split(tree, shots=3, val_per_class=1, seed=7)
    other = draw_split(tree, shots=3, val_per_class=1, seed=8)
    assert first == again and first.train != other.train
    assert first.image_root == "train" and first.empty_classes == ["empty_class"]
    per_class = [sum(label == c for _, label in first.train) for c in range(len(first.keys))]
    # blue (6 files), empty, green (2 files: fewer than the shots), red (6 files)
    assert first.keys == ["blue_circle", "empty_class", "green_circle", "red_circle"]
    assert per_class == [3, 0, 2, 3]
    assert not {p for p, _ in first.train} & {p for p, _ in first.val}
    assert sum(label == 2 for _, label in first.val) == 0  # green has nothing left after its shots
    # a class's draw does not depend on the other classes
    (tree / "train" / "blue_circle").rename(tree / "blue_circle_moved")
    without_blue = draw_split(tree, shots=3, val_per_class=1, seed=7)
    red = first.keys.index("red_circle")
    assert [p for p, l in without_blue.train if l == without_blue.keys.index("red_circle")] == [
        p for p, l in first.train if l == red
    ]


def test_split_file_is_written_once_and_rejects_other_settings(tree, tmp_path):
    path = tmp_path / "split.json"
    settings = dict(shots=2, val_per_class=1, seed=1, vocabulary=None, names_file=None, allow_unnamed=False)
    split = prepare_split(path, tree, True, lambda: None, **settings)
    written = path.read_text()
    (tree / "train" / "red_circle" / "0000.png").unlink()  # the dataset changes; the split file holds
    assert prepare_split(path, tree, True, lambda: None, **settings) == split == FewShotSplit.load(path)
    assert path.read_text() == written
    with pytest.raises(PretrainError, match=r"other settings \{'shots': \(2, 3\)\}"):
        prepare_split(path, tree, True, lambda: None, **{**settings, "shots": 3})


def test_unreadable_images_are_skipped_and_reported(tree):
    folder = ImageFolderIndex.scan(tree / "train")
    dataset = MultiViewDataset(folder.paths, folder.labels, train_augmentation(16), views=2, seed=0)
    items = [dataset[(0, i)] for i in range(len(dataset))]
    skipped = sorted(item.path.split("/")[-1] for item in items if isinstance(item, Skipped))
    assert skipped == ["corrupt.jpg", "truncated.png"]
    batch = collate_skipping(items[:8])
    readable = sum(isinstance(item, Sample) for item in items[:8])
    assert batch.data.shape == (readable, 2, 3, 16, 16) and batch.data.dtype == torch.uint8
    assert len(batch.labels) == readable and len(batch.skipped) == 8 - readable
    empty = collate_skipping([Skipped("x")])
    assert len(empty) == 0 and empty.skipped == ["x"]


def test_views_depend_only_on_seed_epoch_and_image(tree):
    folder = ImageFolderIndex.scan(tree / "train")
    dataset = MultiViewDataset(folder.paths, folder.labels, train_augmentation(16), views=3, seed=5)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = dataset[(2, 0)].data
    assert torch.equal(torch.get_rng_state(), before)  # the caller's RNG is untouched
    torch.manual_seed(999)
    assert torch.equal(a, dataset[(2, 0)].data)
    assert not torch.equal(a, dataset[(3, 0)].data) and not torch.equal(a[0], a[1])


def test_groups_cover_each_epoch_once_whatever_the_number_of_processes():
    # 10 images, steps of 2 groups of 3: steps [3, 3], [3, 1], and the last group of the last step is empty
    one = list(GroupSampler(10, 3, 2, 0, 1, seed=1, epoch=0))
    indices = [i for group in one for _, i in group]
    assert sorted(indices) == list(range(10)) and [len(g) for g in one] == [3, 3, 3, 1]
    assert GroupSampler.steps_per_epoch(10, 3, 2) == 2 and len(GroupSampler(10, 3, 2, 0, 1, 1, 0)) == 4
    assert list(GroupSampler(10, 3, 2, 0, 1, seed=1, epoch=0, start=1)) == one[2:]  # resume at step 1
    # two processes: rank r runs group r of every step, the same images as group r on one process
    ranks = [list(GroupSampler(10, 3, 2, r, 2, seed=1, epoch=0)) for r in range(2)]
    assert ranks[0] == one[0::2] and ranks[1] == one[1::2]
    assert list(GroupSampler(10, 3, 2, 1, 2, seed=1, epoch=0).groups_of_rank()) == [1]
    assert [i for g in GroupSampler(10, 3, 2, 0, 1, seed=1, epoch=1) for _, i in g] != indices
    empty = list(GroupSampler(4, 3, 4, 0, 1, seed=1, epoch=0))  # a step larger than the data: trailing empties
    assert [len(g) for g in empty] == [3, 1, 0, 0]
    with pytest.raises(ValueError, match="cannot be split evenly over 3 processes"):
        GroupSampler(10, 3, 2, 0, 3, seed=1, epoch=0)


def test_negatives_come_from_run_seed_step_and_group_not_the_process():
    a = group_negatives(1000, 50, seed=1, step=3, group=0)
    assert torch.equal(a, group_negatives(1000, 50, seed=1, step=3, group=0)) and len(set(a.tolist())) == 49
    assert not torch.equal(a, group_negatives(1000, 50, seed=1, step=3, group=1))
    assert not torch.equal(a, group_negatives(1000, 50, seed=1, step=4, group=0))
    assert not torch.equal(a, group_negatives(1000, 50, seed=2, step=3, group=0))


def test_learning_rate_follows_the_reference_schedule():
    config = PretrainConfig(data="x", epochs=5).resolved()
    lrs = [config.lr * learning_rate_factor(config, epoch) for epoch in range(5)]
    expected = [1e-5] + [0.002 * 0.5 * (1 + math.cos(math.pi * e / 5)) for e in range(4)]
    assert lrs == pytest.approx(expected)


def test_defaults_are_the_papers_recipe():
    config = PretrainConfig(data="x").resolved()
    assert (config.lr, config.momentum, config.weight_decay, config.warmup_lr, config.warmup_epochs) == (
        0.002,
        0.9,
        5e-4,
        1e-5,
        1,
    )
    assert (config.n_ctx, config.epochs, config.shots, config.views) == (4, 5, 16, 4)
    # 256 images x 4 views per step in groups of 32 with their own 999 negatives: 8 GPUs x 32 in the reference
    assert (config.group_size, config.global_batch, config.groups_per_step, config.num_sampled) == (32, 256, 8, 1000)
    assert (config.randaugment, config.randaugment_ops, config.randaugment_prob) == ("randaugment2", 2, 0.6)
    assert not config.cuda_graphs  # until tests/test_pretrain_cuda_graphs.py has passed on a GPU
    for world_size in (1, 2, 4, 8):
        config.check_world_size(world_size)
    with pytest.raises(PretrainError, match=r"8 groups per step .* over 3 processes; use \[1, 2, 4, 8\]"):
        config.check_world_size(3)
    with pytest.raises(ValueError, match="multiple of group_size"):
        PretrainConfig(data="x", global_batch=100).check()
    assert (config.num_sampled, config.log_base, config.ctx_std, config.clip_model) == (1000, 10.0, 0.02, "ViT-B-16")
    assert PretrainConfig(data="x", n_ctx=16).resolved().epochs == 20


def test_pixels_are_normalised_on_the_device_as_clip_does():
    from pomp_plugins.pretrain.data import PixelNormalizer

    mean, std = (0.48, 0.46, 0.41), (0.27, 0.26, 0.28)
    images = torch.randint(0, 256, (2, 3, 4, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ours = PixelNormalizer(mean, std, "cpu")(images, torch.float64)
    expected = (images.double() / 255 - torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)) / torch.tensor(
        std, dtype=torch.float64
    ).view(1, 3, 1, 1)
    assert ours.dtype == torch.float64 and (ours - expected).abs().max() < 1e-5


def test_sampler_lengths_resumes_and_no_data():
    # 10 images, steps of 3 groups of 2 (6 images): 2 steps, the second with groups of 2, 2 and 0 images
    assert GroupSampler.steps_per_epoch(10, 2, 3) == 2 and GroupSampler.steps_per_epoch(12, 2, 3) == 2
    assert GroupSampler.steps_per_epoch(13, 2, 3) == 3
    assert len(GroupSampler(10, 2, 3, 0, 1, seed=0, epoch=0)) == 6
    assert len(GroupSampler(10, 2, 3, 0, 1, seed=0, epoch=0, start=1)) == 3
    assert len(GroupSampler(10, 2, 3, 0, 1, seed=0, epoch=0, start=5)) == 0
    assert [len(g) for g in GroupSampler(10, 2, 3, 0, 1, seed=0, epoch=0)] == [2, 2, 2, 2, 2, 0]
    assert len(GroupSampler(12, 2, 4, 1, 2, seed=0, epoch=0)) == 4  # 2 steps x 2 groups of this rank
    assert list(GroupSampler(1, 2, 1, 0, 1, seed=0, epoch=4)) == [[(4, 0)]]  # a single image is enough
    with pytest.raises(ValueError, match="no training images"):
        GroupSampler(0, 2, 3, 0, 1, seed=0, epoch=0)
