import contextlib
import json

import numpy as np
import pytest
import torch

from omicformer.dnabert import pp
from omicformer.dnabert.model import DNABert

TINY = {"n_layers": 2, "d_model": 32, "n_heads": 2, "max_len": 64}
FIT = {"accelerator": "cpu", "enable_progress_bar": False}


@contextlib.contextmanager
def one_thread():
    """Tiny models run much faster single-threaded, above all on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _single_thread():
    with one_thread():
        yield


@pytest.fixture
def tiny():
    """Tiny DNABert shape: 2 layers, hidden 32, 64 positions."""
    return dict(TINY)


@pytest.fixture
def fit_kw():
    """Training keywords for quiet CPU runs."""
    return dict(FIT)


@pytest.fixture
def make_seqs():
    """Factory of random DNA sequences."""
    return random_seqs


@pytest.fixture
def official_folder():
    """Factory writing a folder in the official DNABERT format."""
    return write_official_folder


def random_seqs(n, length, seed=0, alphabet="ACGT"):
    rng = np.random.default_rng(seed)
    lengths = [length] * n if np.isscalar(length) else length
    return ["".join(rng.choice(list(alphabet), size=int(n_))) for n_ in lengths]


@pytest.fixture
def seqs():
    return random_seqs(24, 60)


@pytest.fixture(scope="session")
def labelled():
    """Two easy classes: GC-rich vs AT-rich sequences."""
    gc = random_seqs(16, 70, seed=1, alphabet="GGGCCCAT")
    at = random_seqs(16, 70, seed=2, alphabet="AAATTTGC")
    return gc + at, ["gc"] * 16 + ["at"] * 16


@pytest.fixture(scope="session")
def finetuned(labelled):
    model = DNABert(k=3, **TINY)
    with one_thread():
        model.finetune(*labelled, max_epochs=3, batch_size=8, lr=3e-3, **FIT)
    return model


@pytest.fixture
def genome(tmp_path):
    chroms = dict(zip(["chr1", "chr2"], random_seqs(2, [400, 150], seed=7), strict=True))
    path = tmp_path / "genome.fa"
    with open(path, "w") as fh:
        for name, seq in chroms.items():
            fh.write(f">{name}\n")
            fh.writelines(seq[i : i + 60] + "\n" for i in range(0, len(seq), 60))
    return path, chroms


def write_official_folder(path, k=3, *, legacy_names=True, vocab_k=None):
    """A folder like zhihan1996/DNA_bert_k: old-style config.json, vocab.txt, pytorch_model.bin."""
    from transformers import BertConfig, BertForMaskedLM

    path.mkdir(parents=True, exist_ok=True)
    n_vocab = 5 + 4**k
    config = {
        "architectures": ["BertForMaskedLM"],
        "attention_probs_dropout_prob": 0.1,
        "finetuning_task": None,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": 32,
        "initializer_range": 0.02,
        "intermediate_size": 64,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": 64,
        "num_attention_heads": 2,
        "num_hidden_layers": 2,
        "num_labels": 2,
        "output_attentions": False,
        "output_hidden_states": False,
        "pruned_heads": {},
        "torchscript": False,
        "type_vocab_size": 2,
        "vocab_size": n_vocab,
    }
    (path / "config.json").write_text(json.dumps(config))
    pp.write_vocab_txt(path / "vocab.txt", vocab_k or k)
    (path / "tokenizer_config.json").write_text('{"do_lower_case": false, "max_len": 512}')
    torch.manual_seed(123)
    reference = BertForMaskedLM(BertConfig(**config)).eval()
    state = {}
    for key, value in reference.state_dict().items():
        if legacy_names:
            key = key.replace("LayerNorm.weight", "LayerNorm.gamma")
            key = key.replace("LayerNorm.bias", "LayerNorm.beta")
        state[key] = value.clone()
    state["bert.pooler.dense.weight"] = torch.randn(32, 32)  # old MLM checkpoints carry a pooler
    state["bert.pooler.dense.bias"] = torch.zeros(32)
    torch.save(state, path / "pytorch_model.bin")
    return reference


@pytest.fixture
def fasta(tmp_path):
    """A two-record FASTA (chr1: 28 bases on two lines, mixed case, Ns), ``tmp_path/"g.fa"``."""
    path = tmp_path / "g.fa"
    path.write_text(">chr1 first\nACGTACGTACgtacgtNNNN\nACGTAAAA\n>chr2\nGGGGCCCC\n")
    return path
