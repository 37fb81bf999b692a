"""ZeroKey's first stage: keypoint names from the offline table, or parsed from a chat model's answer."""

import pytest

from patchalign3d.errors import WeightsUnavailableError
from patchalign3d.keypoints import KeypointNamer
from patchalign3d.keypoints.namer import parse_names


def test_the_table_holds_the_benchmark_categories_names_once_each():
    namer = KeypointNamer()
    assert namer.categories == ["airplane", "chair", "table"]
    # keypointnet.DEFAULT_NAMES by hand: one name per group of symmetric semantic ids, in semantic-id order
    assert namer.names("Table") == ["corner of the table top", "end of a table leg",
                                    "end of the bar between the table legs"]
    assert namer.names("airplane")[:3] == ["nose of the airplane", "cockpit", "tail end of the airplane"]
    assert KeypointNamer({"mug": ["handle top", "rim"]}).names("mug") == ["handle top", "rim"]
    with pytest.raises(KeyError, match=r"no keypoint names for the category 'teapot'.*\['airplane', 'chair', 'table'\]"):
        namer.names("teapot")


@pytest.mark.parametrize(
    "answer, names",
    [
        ('Sure! Here they are: ["Nose", "wing tip", " Tail.", "nose"]', ["nose", "wing tip", "tail"]),
        ("- nose\n- Wing tip\n2. tail end\nThat is all.", ["nose", "wing tip", "tail end"]),
        ('[1, 2] then ["seat corner"]', ["seat corner"]),  # the first list of strings
        ("I cannot see an object.", []),
    ],
)
def test_names_are_read_from_a_chat_models_answer(answer, names):
    assert parse_names(answer) == names


def test_the_chat_model_backend_asks_for_the_category(monkeypatch):
    namer = KeypointNamer(chat_model="any/chat-model")
    asked = []
    monkeypatch.setattr(namer, "ask", lambda request: asked.append(request) or '["leg end", "seat corner"]')
    assert namer.names("stool") == ["leg end", "seat corner"] and "of a stool" in asked[0]
    monkeypatch.setattr(namer, "ask", lambda request: "no idea")
    with pytest.raises(ValueError, match="named no keypoints for 'stool'"):
        namer.names("stool")
    with pytest.raises(ValueError, match="category"):
        KeypointNamer(prompt="List keypoints.")


def test_a_chat_model_that_is_not_here_is_a_clear_error(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="neither cached nor downloadable"):
        KeypointNamer(chat_model=str(tmp_path / "no-model")).names("chair")
