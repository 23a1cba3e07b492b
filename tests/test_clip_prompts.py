"""Prompt manifests (prompts.txt, metadata.jsonl) read as users write them: a UTF-8 byte-order mark is
not part of the first prompt; a broken metadata.jsonl beside a video does not matter when the prompt
is given, and is named (file:line) when it is needed."""
import json
import shutil
from pathlib import Path

import pytest

from data.clip_dataset import load_clips

ROOT = Path(__file__).resolve().parents[1]
ASTRONAUT = ROOT / "data/samples/pan_astronaut.mp4"


def test_bom_in_prompts_txt_is_not_part_of_the_prompt(tmp_path):
    shutil.copy(ASTRONAUT, tmp_path / "a.mp4")
    (tmp_path / "prompts.txt").write_text("a photo of an astronaut\n", encoding="utf-8-sig")  # Notepad's UTF-8
    (tmp_path / "videos.txt").write_text("a.mp4\n", encoding="utf-8-sig")
    clips = load_clips(tmp_path)
    assert clips[0].prompt == "a photo of an astronaut"
    assert clips[0].video == tmp_path / "a.mp4"


def test_bom_in_metadata_jsonl_parses(tmp_path):
    shutil.copy(ASTRONAUT, tmp_path / "a.mp4")
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"video": "a.mp4", "prompt": "an astronaut"}) + "\n",
                                             encoding="utf-8-sig")
    assert load_clips(tmp_path)[0].prompt == "an astronaut"


def test_broken_metadata_beside_a_video_ignored_when_prompt_given(tmp_path):
    shutil.copy(ASTRONAUT, tmp_path / "a.mp4")
    (tmp_path / "metadata.jsonl").write_text('{"video": "a.mp4", "prompt": \n')
    with pytest.warns(UserWarning, match="metadata.jsonl"):
        clips = load_clips(tmp_path / "a.mp4", prompt="a photo of an astronaut")
    assert clips[0].prompt == "a photo of an astronaut" and clips[0].flow is None
    # without a prompt the manifest is needed: the error names the file and line
    with pytest.raises(ValueError, match=r"metadata\.jsonl:1: invalid JSON"):
        load_clips(tmp_path / "a.mp4")


def test_valid_metadata_beside_a_video_still_gives_its_flow(tmp_path):
    clips = load_clips(ASTRONAUT, prompt="my own prompt")
    assert clips[0].prompt == "my own prompt" and clips[0].flow.name == "pan_astronaut.flow.npy"
