"""The project's own tiny Llama, built at test time (no network, no hub): a seeded model and tokenizer
that exercise the real loading code (safetensors, GGUF, a byte-level BPE, a chat template).

    from actors.llm.tiny import build_tiny
    build_tiny("runs/tiny")      # seconds; what `python -m jobs.llm_tiny --out runs/tiny` does

Layout of DIR:
    config.json, generation_config.json, model.safetensors       transformers / vLLM (source: safetensors)
    tokenizer.json, tokenizer_config.json, chat_template.jinja  byte-level BPE trained on CORPUS
    gguf/tiny-{f32,f16,q8_0}.gguf                               the same weights as GGUF (llama.cpp layout)
    gguf/config.json, gguf/tokenizer*.json                      what vLLM reads beside a GGUF file
    tiny.json                                                   what was built (seed, sizes, files)

The model is a LlamaForCausalLM (hidden 128, 2 layers, 4 heads of dim 32 — vLLM's CPU attention needs
head_dim >= 32 — 2 KV heads, vocab 512), initialised from `seed` and trained for `train_steps` Adam
steps on CORPUS so that its next-token distributions are peaked rather than uniform (greedy decoding
then has clear margins, and the sampling filters have something to cut). Deterministic for one seed on
one machine (float32, one thread).

GGUF follows llama.cpp's convert_hf_to_gguf: tensor names from `gguf`'s own TensorNameMap, the q/k
projections permuted for GGML's interleaved rotary layout, 1-D norms kept F32, the tokenizer as a
`gpt2` (byte-level BPE) vocabulary with merges, and the chat template in the metadata.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from actors.common.storage import atomic_write_json, atomic_write_text

__all__ = ["CHAT_TEMPLATE", "CORPUS", "GGUF_TYPES", "SPECIAL_TOKENS", "TinySpec", "build_tiny", "gguf_path"]

SPECIAL_TOKENS = ["<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
GGUF_TYPES = ("f32", "f16", "q8_0")

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

# A small built-in corpus (written for this project): the tokenizer's merges and the model's few training
# steps come from it, so the model writes text that looks like it.
CORPUS = """\
A dynamical system is a rule for how a state changes in time. The state of a pendulum is its angle and
its velocity; the state of the weather is far larger. When the rule is smooth and the state is small,
we can follow a trajectory step by step and ask where it goes. Some trajectories settle to a fixed
point, some repeat on a limit cycle, and some wander forever on a strange attractor without ever
repeating. The Lorenz system was the first famous example: three equations, three numbers, and a
butterfly shaped set that every trajectory approaches but never leaves.
Two trajectories that start close together on a chaotic attractor separate quickly. The rate of that
separation is the largest Lyapunov exponent. A positive exponent means chaos; a zero exponent means a
cycle; a negative exponent means the state falls to a fixed point. We estimate the exponent by
following a trajectory and a small perturbation of it, renormalising the perturbation at every step.
A sweep runs the same system over a grid of parameters and labels each point by its regime. The
regime map shows where the system is steady, where it oscillates and where it is chaotic. Between the
regions lie bifurcations: a fixed point loses stability, a cycle is born, a cycle doubles its period.
Information flows between variables too. Transfer entropy asks how much the past of one variable
tells us about the next value of another, beyond what the other's own past already tells us. It is
zero when there is no flow and positive when there is, and it needs many samples to estimate well.
A language model is also a dynamical system: the state is the text so far, and the rule picks the next
token from a distribution. Greedy decoding always takes the most likely token; sampling draws from the
distribution after temperature, top k and top p have shaped it. A repetition penalty makes tokens that
already appeared less likely. A cache of keys and values lets the model skip work it has done before,
and a shared prefix between two requests can be computed once and reused.
The user asks a question and the assistant answers it. The assistant says what it knows and what it
does not know. It counts tokens, measures time and reports the numbers with their units.
"""


class TinySpec:
    """The sizes of the tiny model (plain attributes: this is not a user-facing config)."""

    vocab_size = 512
    hidden_size = 128
    intermediate_size = 256
    num_hidden_layers = 2
    num_attention_heads = 4
    num_key_value_heads = 2
    head_dim = 32
    max_position_embeddings = 1024
    rope_theta = 10000.0
    rms_norm_eps = 1e-5


def gguf_path(model_dir: str | Path, kind: str = "f32") -> Path:
    """The GGUF file of `kind` (f32, f16, q8_0) that `build_tiny` wrote under `model_dir`."""
    return Path(model_dir) / "gguf" / f"tiny-{kind}.gguf"


def _train_tokenizer(vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS.splitlines(), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return tok


def _hf_tokenizer(tok: Any) -> Any:
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                 additional_special_tokens=SPECIAL_TOKENS[3:], model_max_length=TinySpec.max_position_embeddings)
    hf.chat_template = CHAT_TEMPLATE
    return hf


def _train(model: Any, ids: list[int], steps: int, seed: int) -> float:
    """A few Adam steps of next-token prediction on the corpus; returns the last loss."""
    import torch

    if steps <= 0:
        return float("nan")
    g = torch.Generator().manual_seed(seed)
    data = torch.tensor(ids)
    seq, batch = 64, 8
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        starts = torch.randint(0, len(data) - seq - 1, (batch,), generator=g)
        x = torch.stack([data[s:s + seq] for s in starts])
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return float(loss.detach())


def _permute_qk(w: Any, n_head: int) -> Any:
    """llama.cpp's permutation of a q/k projection (HF rotate-half -> GGML interleaved rotary)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _write_gguf(path: Path, state: dict[str, Any], tok: Any, kind: str, bos: int, eos: int) -> None:
    import gguf
    import numpy as np

    s = TinySpec
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, s.num_hidden_layers)
    qtype = {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16,
             "q8_0": gguf.GGMLQuantizationType.Q8_0}[kind]
    ftype = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
             "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[kind]
    tmp = path.with_name(f".{path.name}.tmp")
    w = gguf.GGUFWriter(str(tmp), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    w.add_name("attractor-tiny-llama")
    w.add_context_length(s.max_position_embeddings)
    w.add_embedding_length(s.hidden_size)
    w.add_block_count(s.num_hidden_layers)
    w.add_feed_forward_length(s.intermediate_size)
    w.add_head_count(s.num_attention_heads)
    w.add_head_count_kv(s.num_key_value_heads)
    w.add_key_length(s.head_dim)
    w.add_value_length(s.head_dim)
    w.add_layer_norm_rms_eps(s.rms_norm_eps)
    w.add_rope_dimension_count(s.head_dim)
    w.add_rope_freq_base(s.rope_theta)
    w.add_vocab_size(s.vocab_size)
    w.add_file_type(ftype)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    vocab = tok.get_vocab()
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    specials = set(SPECIAL_TOKENS)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL if t in specials else gguf.TokenType.NORMAL for t in tokens])
    w.add_token_merges([" ".join(m) if isinstance(m, (list, tuple)) else m
                        for m in json.loads(tok.to_str())["model"]["merges"]])
    w.add_bos_token_id(bos)
    w.add_eos_token_id(eos)
    w.add_add_bos_token(True)
    w.add_chat_template(CHAT_TEMPLATE)
    for hf_name, tensor in state.items():
        arr = tensor.detach().float().numpy()
        base, suffix = hf_name.rsplit(".", 1)
        name = f"{names.get_name(base)}.{suffix}"
        if base.endswith("q_proj"):
            arr = _permute_qk(arr, s.num_attention_heads)
        elif base.endswith("k_proj"):
            arr = _permute_qk(arr, s.num_key_value_heads)
        if arr.ndim == 1 or kind == "f32":
            w.add_tensor(name, arr.astype(np.float32))
        elif kind == "f16":
            w.add_tensor(name, arr.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(arr.astype(np.float32), qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tmp.chmod(0o644)
    tmp.replace(path)


def build_tiny(out: str | Path, seed: int = 0, train_steps: int = 120, gguf: bool = True) -> dict[str, Any]:
    """Build the tiny model into `out` (created; files replaced atomically); returns what tiny.json holds."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tok = _train_tokenizer(TinySpec.vocab_size)
        hf_tok = _hf_tokenizer(tok)
        bos, eos, pad, end = (tok.token_to_id(t) for t in ("<s>", "</s>", "<pad>", "<|end|>"))
        s = TinySpec
        config = LlamaConfig(vocab_size=s.vocab_size, hidden_size=s.hidden_size, intermediate_size=s.intermediate_size,
                             num_hidden_layers=s.num_hidden_layers, num_attention_heads=s.num_attention_heads,
                             num_key_value_heads=s.num_key_value_heads, head_dim=s.head_dim,
                             max_position_embeddings=s.max_position_embeddings, rms_norm_eps=s.rms_norm_eps,
                             rope_theta=s.rope_theta, tie_word_embeddings=False, bos_token_id=bos,
                             eos_token_id=eos, pad_token_id=pad, dtype="float32")
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
        ids = tok.encode(CORPUS, add_special_tokens=False).ids
        loss = _train(model, ids, train_steps, seed)
        model.generation_config = GenerationConfig(bos_token_id=bos, eos_token_id=[eos, end], pad_token_id=pad)
        model.save_pretrained(out, safe_serialization=True)
        hf_tok.save_pretrained(out)
        for f in out.iterdir():   # transformers writes some files owner-only
            if f.is_file():
                f.chmod(0o644)
        files = ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                 "tokenizer_config.json"]
        if gguf:
            gdir = out / "gguf"
            gdir.mkdir(exist_ok=True)
            for name in out.iterdir():   # config + tokenizer beside the GGUF files, no safetensors
                if name.is_file() and name.suffix in (".json", ".jinja"):
                    shutil.copy2(name, gdir / name.name)
            state = {k: v for k, v in model.state_dict().items() if "rotary" not in k}
            for kind in GGUF_TYPES:
                _write_gguf(gguf_path(out, kind), state, tok, kind, bos, eos)
                files.append(str(gguf_path(out, kind).relative_to(out)))
    finally:
        torch.set_num_threads(threads)
    info = {"seed": seed, "train_steps": train_steps, "final_loss": round(loss, 4), "corpus_tokens": len(ids),
            "vocab_size": s.vocab_size, "hidden_size": s.hidden_size, "num_hidden_layers": s.num_hidden_layers,
            "num_attention_heads": s.num_attention_heads, "num_key_value_heads": s.num_key_value_heads,
            "head_dim": s.head_dim, "parameters": sum(p.numel() for p in model.parameters()),
            "special_token_ids": {"bos": bos, "eos": eos, "pad": pad, "end": end},
            "files": files, "seconds": round(time.perf_counter() - t0, 2)}
    atomic_write_json(out / "tiny.json", info)
    atomic_write_text(out / "README.txt", "attractor tiny Llama: built by `python -m jobs.llm_tiny` "
                      "(actors/llm/tiny.py); random weights trained briefly on a built-in corpus. Test model only.\n")
    return info
