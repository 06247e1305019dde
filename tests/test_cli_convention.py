"""The tools' one command-line convention (pomp_plugins/prompt/cli.py): --help everywhere, writing nothing; the same
options for the same idea; --vocabulary SPEC; --device auto."""

import argparse
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from pomp_plugins.pretrain.config import build_parser, config_from_args
from pomp_plugins.prompt import VocabularyError
from pomp_plugins.prompt.cli import (
    add_prompt_arguments,
    image_folder_classes,
    prompt_from_args,
    resolve_device,
)

ROOT = Path(__file__).resolve().parent.parent
TOOLS = sorted((ROOT / "tools").glob("*.py"))
# Options that mean one idea each, and the names they must not be spelt as in any tool.
RETIRED = ("--names", "--names-file", "--out ", "--image ", "--init-phrase", "--nproc_per_node")
EXCEPTIONS = {
    "test.py": {"--out "},  # mmseg's own tools/test.py argument (the label-map folder): the same command runs both
}


def repository_state() -> dict[str, tuple[int, int]]:
    """(mtime, size) of every file in the repository that git tracks or sees, ignored outputs included."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    state = {}
    for name in filter(None, listed):
        path = ROOT / os.fsdecode(name)
        if path.is_file():
            info = path.stat()
            state[str(path)] = (info.st_mtime_ns, info.st_size)
    return state


def test_tool_list_is_complete():
    assert {tool.name for tool in TOOLS} >= {
        "demo.py",
        "detect_demo.py",
        "eval_zeroshot.py",
        "export_embeddings.py",
        "fetch_prompt.py",
        "make_vocabularies.py",
        "pretrain_prompt.py",
        "segment_demo.py",
        "test.py",
        "train.py",
        "train_net.py",
        "tune_prompt_seg.py",
    }


@pytest.mark.slow
def test_every_tool_prints_its_help_and_writes_nothing():
    before = repository_state()

    def help_of(tool: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(tool), "--help"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = dict(zip(TOOLS, pool.map(help_of, TOOLS)))
    for tool, result in results.items():
        assert result.returncode == 0, f"{tool.name} --help: {result.stderr[-2000:]}"
        assert result.stdout.startswith("usage:"), f"{tool.name} --help printed no usage: {result.stdout[:300]}"
        for retired in set(RETIRED) - EXCEPTIONS.get(tool.name, set()):
            assert retired not in result.stdout, f"{tool.name} still offers {retired.strip()}"
    assert repository_state() == before, "a tool wrote into the repository when asked for --help"


def test_device_auto_is_cuda_when_available_else_cpu():
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu" and resolve_device("cuda:1") == "cuda:1"


def test_prompt_options_are_exclusive_and_default_to_the_hard_prompt():
    parser = argparse.ArgumentParser()
    add_prompt_arguments(parser)
    assert prompt_from_args(parser.parse_args([])) == {"prompt": None, "hard_prompt": "a photo of a", "templates": None}
    assert prompt_from_args(parser.parse_args(["--templates", "vild"]))["templates"] == "vild"
    assert prompt_from_args(parser.parse_args(["--prompt", "p.pt"])) == {
        "prompt": "p.pt",
        "hard_prompt": None,
        "templates": None,
    }
    with pytest.raises(SystemExit):
        parser.parse_args(["--prompt", "p.pt", "--templates", "vild"])


def test_image_folder_classes_take_a_mapping_file_or_any_vocabulary_spec(tmp_path):
    mapping = tmp_path / "LOC_synset_mapping.txt"
    mapping.write_text("n01440764 tench, Tinca tinca\n")
    assert image_folder_classes(str(mapping)) == (None, str(mapping))  # read as a folder -> name file
    vocabulary, names_file = image_folder_classes("imagenet21k-p")
    assert names_file is None and len(vocabulary) == 10450
    assert image_folder_classes("red circle, blue square")[0].names == ("red circle", "blue square")
    assert image_folder_classes(None) == (None, None)
    with pytest.raises(FileNotFoundError, match="names file 'missing.txt' does not exist"):
        image_folder_classes("missing.txt")
    with pytest.raises(VocabularyError, match="unknown vocabulary 'imagenet42k'"):
        image_folder_classes("imagenet42k")


def test_pretraining_reads_its_class_names_from_vocabulary(tmp_path, capsys):
    names = tmp_path / "names.tsv"
    names.write_text("a_dir\tant\n")
    config = config_from_args(["--data", "d", "--vocabulary", str(names)])
    assert (config.vocabulary, config.names_file) == (None, str(names))
    config = config_from_args(["--data", "d", "--vocabulary", "imagenet21k-p"])
    assert (config.vocabulary, config.names_file) == ("imagenet21k-p", None)
    assert "--names-file" not in build_parser().format_help()
    with pytest.raises(SystemExit):
        config_from_args(["--data", "d", "--vocabulary", "ant,bee"])
    assert "write the names to a file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        config_from_args(["--data", "d", "--vocabulary", "imagenet42k"])
    # --clip-pretrained auto: with no prompt file to take them from, OpenAI's weights, as before
    assert config.clip_pretrained == "auto" and config.resolved().clip_pretrained == "openai"
    assert config.resolved().device == resolve_device("auto")
