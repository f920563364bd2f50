"""The built-in concept suite (xsteer.tasks.concepts): data quality, file validation, lexicon scoring, token ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import char_tokenizer

from xsteer.errors import InputError
from xsteer.tasks.concepts import (
    BUILTIN,
    Concept,
    ConceptError,
    LexiconConcept,
    concept_names,
    lexicon_score,
    load_concept,
    pole_token_ids,
)


def _norm(text: str) -> str:
    return " ".join(text.split()).lower()


# --------------------------------------------------------------------------------------------------
# Built-in concepts
# --------------------------------------------------------------------------------------------------


def test_builtin_names():
    assert concept_names() == list(BUILTIN) == ["sentiment", "topic", "formality", "certainty"]


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_loads_with_project_minimums(name):
    c = load_concept(name, min_pairs=64, min_probes=24)
    assert isinstance(c, Concept)
    assert c.name == name
    assert c.source == f"builtin:{name}"
    assert c.description
    assert len(c.poles) == 2 and c.poles[0] != c.poles[1]
    assert len(c.pairs) >= 64
    assert len(c.probes) >= 24


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_pairs_and_probes_are_clean(name):
    c = load_concept(name)
    # Texts within a pair differ; no duplicate pairs or probes.
    assert all(_norm(p) != _norm(n) for p, n in c.pairs)
    keys = [(_norm(p), _norm(n)) for p, n in c.pairs]
    assert len(set(keys)) == len(keys)
    assert len({_norm(p) for p in c.probes}) == len(c.probes)
    # No probe equals, or is contained in, any pair text.
    texts = [_norm(t) for pair in c.pairs for t in pair]
    for probe in c.probes:
        assert not any(_norm(probe) in t for t in texts), probe
    # Plain text, no chat markup.
    for text in [t for pair in c.pairs for t in pair] + list(c.probes):
        assert "<|" not in text and "<start_of_turn>" not in text


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_lexicons(name):
    c = load_concept(name)
    pos, neg = c.words
    for words in (pos, neg):
        assert 12 <= len(words) <= 25
        assert all(w == w.lower() and w.isalpha() and " " not in w for w in words)
        assert len(set(words)) == len(words)
    assert not set(pos) & set(neg)
    # No word is a prefix of a word of the other pole.
    assert not [(a, b) for a in pos for b in neg if a.startswith(b) or b.startswith(a)]
    # Probes are neutral: they name no lexicon word of either pole.
    assert all(lexicon_score(p, c) == 0 and not _lexicon_hits(p, c) for p in c.probes)
    # On average, the + texts score above the - texts.
    diff = sum(lexicon_score(p, c) - lexicon_score(n, c) for p, n in c.pairs)
    assert diff > 0


def _lexicon_hits(text: str, concept: LexiconConcept) -> int:
    one = LexiconConcept(
        concept.name, "", concept.poles, (concept.words[0] + concept.words[1], ("zzzz",)), (), (), ""
    )
    return lexicon_score(text, one)


def test_builtin_file_is_used_by_path():
    from xsteer.tasks import concepts

    path = Path(concepts.__file__).parent / "data" / "sentiment.jsonl"
    by_path = load_concept(path)
    by_name = load_concept("sentiment")
    assert by_path.source == str(path)
    assert (by_path.pairs, by_path.probes, by_path.words) == (by_name.pairs, by_name.probes, by_name.words)
    assert load_concept(str(path)).pairs == by_name.pairs


def test_unknown_name_lists_builtins():
    with pytest.raises(ConceptError) as e:
        load_concept("humour")
    msg = str(e.value)
    assert all(n in msg for n in BUILTIN)
    assert ".jsonl" in msg
    assert isinstance(e.value, InputError) and isinstance(e.value, ValueError)


def test_missing_jsonl_file(tmp_path):
    with pytest.raises(ConceptError, match="not found"):
        load_concept(tmp_path / "nope.jsonl")


# --------------------------------------------------------------------------------------------------
# Validation of user files
# --------------------------------------------------------------------------------------------------

HEADER = {
    "concept": "mood",
    "description": "test",
    "poles": ["up", "down"],
    "words": {"up": ["glad", "joyful"], "down": ["gloomy", "glum"]},
    "readout_words": {"up": ["cheerful", "merry"], "down": ["sad", "blue"]},
}
PAIR = {"pair": {"up": "The day ended and I felt glad.", "down": "The day ended and I felt gloomy."}}
PAIR2 = {"pair": {"up": "After the call she was joyful.", "down": "After the call she was glum."}}
PROBE = {"probe": "When the results came in, we were"}


def _write(tmp_path: Path, lines: list, name: str = "c.jsonl") -> Path:
    path = tmp_path / name
    path.write_text(
        "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n", encoding="utf-8"
    )
    return path


def _error(path: Path, **kw) -> str:
    with pytest.raises(ConceptError) as e:
        load_concept(path, **kw)
    return str(e.value)


def test_user_file_loads(tmp_path):
    path = _write(tmp_path, ["", HEADER, PAIR, "   ", PAIR2, PROBE])
    c = load_concept(path, min_pairs=2, min_probes=1)
    assert c.name == "mood" and c.poles == ("up", "down")
    assert c.words == (("glad", "joyful"), ("gloomy", "glum"))
    assert c.pairs == (
        ("The day ended and I felt glad.", "The day ended and I felt gloomy."),
        ("After the call she was joyful.", "After the call she was glum."),
    )
    assert c.probes == ("When the results came in, we were",)
    assert c.source == str(path)


def test_readout_words_that_end_a_pair_are_refused(tmp_path):
    # The readout would count the very tokens the vectors were read at.
    for header in (
        {k: v for k, v in HEADER.items() if k != "readout_words"},
        {**HEADER, "readout_words": {"up": ["cheerful"], "down": ["Glum"]}},
    ):
        msg = _error(_write(tmp_path, [header, PAIR, PAIR2, PROBE]))
        assert msg.startswith(f"{tmp_path / 'c.jsonl'}:")
        assert "ends in the readout word" in msg and "readout_words" in msg
    c = load_concept(_write(tmp_path, [HEADER, PAIR, PAIR2, PROBE]))
    assert c.readout == (("cheerful", "merry"), ("sad", "blue")) and c.words[0] == ("glad", "joyful")


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_readout_words_occur_nowhere_in_the_pairs(name):
    import re

    c = load_concept(name)
    assert c.readout_words is not None
    text = " ".join(t for pair in c.pairs for t in pair).lower()
    found = [w for ws in c.readout for w in ws if re.search(rf"(?<!\w){re.escape(w)}(?!\w)", text)]
    assert found == []
    assert all(len(ws) >= 8 for ws in c.readout)


def test_existing_file_without_jsonl_suffix(tmp_path):
    path = _write(tmp_path, [HEADER, PAIR, PROBE], name="mood.txt")
    assert load_concept(str(path)).name == "mood"


def test_invalid_json(tmp_path):
    path = _write(tmp_path, [HEADER, PAIR, '{"probe": "oops"'])
    msg = _error(path)
    assert msg.startswith(f"{path}:3: ") and "invalid JSON" in msg


def test_line_not_an_object(tmp_path):
    path = _write(tmp_path, [HEADER, PAIR, '["a", "b"]'])
    msg = _error(path)
    assert msg.startswith(f"{path}:3: ") and "object" in msg


def test_first_line_not_a_header(tmp_path):
    path = _write(tmp_path, ["", PAIR, HEADER])
    assert _error(path).startswith(f"{path}:2: ")


@pytest.mark.parametrize(
    "change",
    [
        {"concept": None},
        {"concept": ""},
        {"poles": ["up"]},
        {"poles": ["up", "up"]},
        {"poles": ["up", 3]},
        {"poles": "up,down"},
        {"words": None},
        {"words": {"up": ["glad"]}},
        {"words": {"up": [], "down": ["glum"]}},
        {"words": {"up": ["glad", 7], "down": ["glum"]}},
        {"words": {"up": "glad", "down": ["glum"]}},
        {"description": 5},
    ],
)
def test_bad_header(tmp_path, change):
    header = {**HEADER, **change}
    header = {k: v for k, v in header.items() if v is not None}
    path = _write(tmp_path, ["", header, PAIR, PROBE])
    msg = _error(path)
    assert msg.startswith(f"{path}:2: ") and "header" in msg


def test_word_in_both_poles(tmp_path):
    header = {**HEADER, "words": {"up": ["glad", "fine"], "down": ["Fine", "glum"]}}
    path = _write(tmp_path, [header, PAIR, PROBE])
    msg = _error(path)
    assert msg.startswith(f"{path}:1: ") and "fine" in msg and "both poles" in msg


@pytest.mark.parametrize("line", [{"text": "hello"}, {"pair": PAIR["pair"], "probe": "x y"}, {}])
def test_neither_pair_nor_probe(tmp_path, line):
    path = _write(tmp_path, [HEADER, PAIR, line, PROBE])
    msg = _error(path)
    assert msg.startswith(f"{path}:3: ") and "pair" in msg and "probe" in msg


@pytest.mark.parametrize(
    "pair",
    [
        {"up": "I felt glad."},
        {"up": "I felt glad.", "down": ""},
        {"up": "I felt glad.", "down": "   "},
        {"up": "I felt glad.", "down": 3},
        {"up": "I felt glad.", "sideways": "I felt glum."},
        {"up": "I felt glad.", "down": "I felt glum.", "extra": "no"},
        ["I felt glad.", "I felt glum."],
    ],
)
def test_bad_pair(tmp_path, pair):
    path = _write(tmp_path, [HEADER, PROBE, {"pair": pair}])
    msg = _error(path)
    assert msg.startswith(f"{path}:3: ") and "pair" in msg


def test_identical_pair_texts(tmp_path):
    path = _write(tmp_path, [HEADER, {"pair": {"up": "Same  text.", "down": "same text."}}, PROBE])
    msg = _error(path)
    assert msg.startswith(f"{path}:2: ") and "identical" in msg


@pytest.mark.parametrize("probe", ["", "   ", 5, None])
def test_empty_probe(tmp_path, probe):
    path = _write(tmp_path, [HEADER, PAIR, {"probe": probe}])
    msg = _error(path)
    assert msg.startswith(f"{path}:3: ") and "probe" in msg


def test_duplicate_pair(tmp_path):
    path = _write(tmp_path, [HEADER, PAIR, PROBE, PAIR2, PAIR])
    msg = _error(path)
    assert msg.startswith(f"{path}:5: ") and "duplicate" in msg and "line 2" in msg


def test_duplicate_probe(tmp_path):
    path = _write(tmp_path, [HEADER, PAIR, PROBE, {"probe": "when the results  came in, we were"}])
    msg = _error(path)
    assert msg.startswith(f"{path}:4: ") and "duplicate" in msg and "line 3" in msg


def test_too_few_pairs_or_probes(tmp_path):
    path = _write(tmp_path, [HEADER, PAIR, PAIR2, PROBE])
    assert load_concept(path, min_pairs=2, min_probes=1)
    msg = _error(path, min_pairs=3)
    assert str(path) in msg and "2 pairs" in msg and "3" in msg
    msg = _error(path, min_probes=2)
    assert str(path) in msg and "1 probes" in msg and "2" in msg
    assert "header" in _error(_write(tmp_path, ["", "  "], name="empty.jsonl"))


@pytest.mark.parametrize(
    "probe",
    ["After the call she was", "after the   CALL she was joyful.", "The day ended and I felt gloomy."],
)
def test_probe_overlapping_a_pair(tmp_path, probe):
    path = _write(tmp_path, [HEADER, PAIR, PROBE, PAIR2, {"probe": probe}])
    msg = _error(path)
    assert msg.startswith(f"{path}:5: ")
    assert "overlaps" in msg
    assert ("line 4" in msg) if "call" in probe.lower() else ("line 2" in msg)


def test_probe_before_its_pair_still_overlaps(tmp_path):
    path = _write(tmp_path, [HEADER, {"probe": "The day ended and"}, PAIR])
    msg = _error(path)
    assert msg.startswith(f"{path}:2: ") and "line 3" in msg


def test_not_utf8(tmp_path):
    path = tmp_path / "latin.jsonl"
    path.write_bytes(json.dumps(HEADER).encode() + b'\n{"probe": "caf\xe9 was"}\n')
    msg = _error(path)
    assert "UTF-8" in msg and msg.startswith(f"{path}:2: ")


# --------------------------------------------------------------------------------------------------
# lexicon_score
# --------------------------------------------------------------------------------------------------


def _concept(pos=("happy", "good", "great"), neg=("sad", "bad")) -> Concept:
    return LexiconConcept("t", "", ("p", "n"), (tuple(pos), tuple(neg)), (), (), "test")


def test_lexicon_score_counts():
    c = _concept()
    assert lexicon_score("", c) == 0
    assert lexicon_score("A good day.", c) == 1
    assert lexicon_score("Good, GOOD and great!", c) == 3
    assert lexicon_score("It was bad. Sad, really.", c) == -2
    assert lexicon_score("good food, bad service, great view", c) == 1
    assert lexicon_score("happy happy sad", c) == 1


def test_lexicon_score_whole_words_only():
    c = _concept()
    assert lexicon_score("I am unhappy.", c) == 0
    assert lexicon_score("goodness, greatest, badly, sadden, saddle", c) == 0
    assert lexicon_score("The happy-go-lucky dog", c) == 1
    assert lexicon_score("happy_face", c) == 0
    assert lexicon_score("'good' (bad)", c) == 0
    assert lexicon_score("good\nbad\ngreat", c) == 1


def test_lexicon_score_on_builtin():
    c = load_concept("sentiment")
    assert lexicon_score("The soup was wonderful and the bread was excellent.", c) == 2
    assert lexicon_score("Awful service and terrible food, but a nice view.", c) == -1
    assert lexicon_score("The unhappy waiter", c) == 0


# --------------------------------------------------------------------------------------------------
# pole_token_ids
# --------------------------------------------------------------------------------------------------


class _WordTok:
    """A fake tokenizer: one id per whitespace word; words in ``split`` tokenize to a shared prefix piece."""

    def __init__(self, split=()):
        self.vocab: dict[str, int] = {}
        self.split = dict(split)
        self.calls: list[tuple[str, bool]] = []

    def __call__(self, text, add_special_tokens=True):
        self.calls.append((text, add_special_tokens))
        pieces = []
        for w in text.split():
            pieces += self.split.get(w, [w])
        ids = [self.vocab.setdefault(p, len(self.vocab) + 10) for p in pieces]

        class R:
            input_ids = ([1] if add_special_tokens else []) + ids

        return R()


def test_pole_token_ids_first_token_both_cases_dedup():
    tok = _WordTok()
    c = _concept(pos=("good", "great"), neg=("bad",))
    pos, neg = pole_token_ids(tok, c)
    v = tok.vocab
    assert pos == [v["good"], v["Good"], v["great"], v["Great"]]
    assert neg == [v["bad"], v["Bad"]]
    assert all(text.startswith(" ") and not special for text, special in tok.calls)


def test_pole_token_ids_removes_shared_ids():
    # "awesome" and "awful" share their first piece "aw"; it is dropped from both poles.
    tok = _WordTok(split={"awesome": ["aw", "esome"], "awful": ["aw", "ful"], "Awesome": ["Aw", "esome"]})
    c = _concept(pos=("awesome", "good"), neg=("awful", "bad"))
    pos, neg = pole_token_ids(tok, c)
    v = tok.vocab
    assert v["aw"] not in pos and v["aw"] not in neg
    assert v["Aw"] in pos  # only the + pole has "Aw" (its "Awful" is a whole word here)
    assert set(pos) == {v["Aw"], v["good"], v["Good"]}
    assert set(neg) == {v["Awful"], v["bad"], v["Bad"]}


def test_pole_token_ids_empty_pole_raises():
    tok = _WordTok(
        split={"gloomy": ["g", "loomy"], "Gloomy": ["G", "loomy"], "glad": ["g", "lad"], "Glad": ["G", "lad"]}
    )
    c = _concept(pos=("glad",), neg=("gloomy",))
    with pytest.raises(ConceptError, match="no token ids"):
        pole_token_ids(tok, c)


def test_pole_token_ids_char_tokenizer():
    # Character-level: the first token of " word" is the space, shared by every word of both poles.
    tok = char_tokenizer()
    with pytest.raises(ConceptError):
        pole_token_ids(tok, load_concept("sentiment"))


@pytest.mark.slow
def test_pole_token_ids_smollm2():
    from xsteer.core.models import ModelSpecError, load_hf

    try:
        _, tok, _ = load_hf("smollm2-135m")
    except ModelSpecError as e:
        pytest.skip(f"smollm2-135m not available: {e}")
    for name in BUILTIN:
        pos, neg = pole_token_ids(tok, load_concept(name))
        assert len(pos) >= 10 and len(neg) >= 10, name
        assert not set(pos) & set(neg)
        assert len(set(pos)) == len(pos) and len(set(neg)) == len(neg)
