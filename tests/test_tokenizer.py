import numpy as np
import pytest

from fastattn.io.tokenizer import CharTokenizer


def test_vocabulary_is_the_sorted_characters():
    tok = CharTokenizer.from_text("hello, wörld\n")
    assert tok.chars == "".join(sorted(set("hello, wörld\n")))
    assert tok.vocab_size == len(set("hello, wörld\n"))
    assert tok.encode("hello").tolist() == [tok.chars.index(c) for c in "hello"]


def test_round_trip_and_json():
    text = "To be, or not to be — ça.\n"
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text)
    assert ids.dtype == np.int64 and ids.shape == (len(text),)
    assert tok.decode(ids) == text
    assert tok.decode(ids.reshape(1, -1).astype(np.int32)) == text
    assert tok.decode([]) == "" and tok.encode("").shape == (0,)
    again = CharTokenizer.from_json(tok.to_json())
    assert again == tok and again.encode(text).tolist() == ids.tolist()


def test_errors_name_the_problem():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match=r"'z' at position 2"):
        tok.encode("abz")
    with pytest.raises(ValueError, match=r"id 3 at position 1"):
        tok.decode([0, 3])
    with pytest.raises(ValueError, match="integers"):
        tok.decode([0.5])
    with pytest.raises(TypeError, match="str"):
        tok.encode(b"abc")
    with pytest.raises(ValueError, match="empty"):
        CharTokenizer.from_text("")
    with pytest.raises(ValueError, match="repeats"):
        CharTokenizer("aba")
    with pytest.raises(ValueError, match="single characters"):
        CharTokenizer(["a", "bc"])
    with pytest.raises(ValueError, match="CharTokenizer"):
        CharTokenizer.from_json({"type": "bpe"})
