"""Text corpora: the stdlib split by file, single files, encoding with BOS/EOS and a fallback."""

from __future__ import annotations

import numpy as np
import pytest

from rnnstream.models import CharLMConfig
from rnnstream.models.charlm import BOS, EOS, FALLBACK_CHAR
from rnnstream.train import (
    corpus_chars,
    encode,
    load_corpus,
    load_stdlib,
    load_text_file,
    stdlib_sources,
    token_stream,
)


@pytest.fixture
def fake_stdlib(tmp_path):
    for i in range(40):
        (tmp_path / "pkg" / f"m{i}.py").parent.mkdir(exist_ok=True)
        (tmp_path / "pkg" / f"m{i}.py").write_text(f"x = {i}\n", encoding="utf-8")
    (tmp_path / "latin1.py").write_bytes("s = 'caf\xe9'\n".encode("latin-1"))
    (tmp_path / "site-packages").mkdir()
    (tmp_path / "site-packages" / "third_party.py").write_text("y = 1\n")
    (tmp_path / "notes.txt").write_text("not python\n")
    return tmp_path


def test_stdlib_split_is_by_file_deterministic_and_skips_what_it_should(fake_stdlib):
    corpus = load_stdlib(val_fraction=0.25, root=fake_stdlib)
    assert corpus == load_stdlib(val_fraction=0.25, root=fake_stdlib)
    documents = set(corpus.train) | set(corpus.validation)
    assert documents == {f"x = {i}\n" for i in range(40)}  # no latin-1, site-packages, .txt
    assert len(corpus.train) + len(corpus.validation) == 40
    assert 3 <= len(corpus.validation) <= 17  # about a quarter, decided per file
    assert not set(corpus.train) & set(corpus.validation)


def test_the_real_stdlib_is_found():
    sources = stdlib_sources()
    assert len(sources) > 500 and any(p.name == "argparse.py" for p in sources)


def test_text_file_keeps_its_tail_for_validation(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("".join(f"line {i}\n" for i in range(100)), encoding="utf-8")
    corpus = load_corpus(path, val_fraction=0.1)
    assert corpus.validation == ("".join(f"line {i}\n" for i in range(90, 100)),)
    assert corpus.train[0].endswith("line 89\n")
    path.write_text("one line\n", encoding="utf-8")
    with pytest.raises(ValueError, match="too short"):
        load_text_file(path)


def test_unknown_characters_become_the_fallback():
    config = CharLMConfig()
    ids = encode("a\u00e9\u4e2d\x02b", config)
    fallback = config.vocab.index(FALLBACK_CHAR)
    a, b = config.vocab.index("a"), config.vocab.index("b")
    assert ids.tolist() == [a, fallback, fallback, fallback, b]
    with pytest.raises(ValueError, match="fallback"):
        encode("a", CharLMConfig(chars="ab"))


def test_token_stream_frames_each_document_with_bos_and_eos():
    config = CharLMConfig(chars="abc" + FALLBACK_CHAR)
    stream = token_stream(("ab", "c"), config).numpy()
    a, b, c = (config.vocab.index(ch) for ch in "abc")
    np.testing.assert_array_equal(stream, [BOS, a, b, EOS, BOS, c, EOS])
    shuffled = {tuple(token_stream(("ab", "c", "cab"), config, s).tolist()) for s in range(8)}
    assert len(shuffled) > 1  # the seed orders the documents


def test_data_vocabulary_holds_the_seen_characters_and_the_fallback():
    assert corpus_chars(("ba", "ca\x02")) == "abc" + FALLBACK_CHAR
